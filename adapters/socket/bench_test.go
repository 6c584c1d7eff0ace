package socket_test

import (
	"bytes"
	"io"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/wsserver/wsserver/adapters/socket"
)

// BenchmarkSend measures the send path: queue a shared 100-byte frame and
// write it, the client reading as fast as it can. At most 256 frames are in
// flight, so the queue never fills.
func BenchmarkSend(b *testing.B) {
	var written atomic.Int64
	c, client := pair(b, socket.Config{MaxQueue: 1 << 20, OnWritten: func(n int) { written.Add(int64(n)) }})
	go func() { _, _ = io.Copy(io.Discard, client.NetConn()) }()
	frame := socket.Frame(bytes.Repeat([]byte{'x'}, 100))
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for int64(i)-written.Load() > 256 {
			runtime.Gosched()
		}
		c.Send(frame)
	}
	for written.Load() < int64(b.N) {
		runtime.Gosched()
	}
}

// BenchmarkRead measures the read path: one 100-byte masked text message
// after another, as a browser sends them.
func BenchmarkRead(b *testing.B) {
	c, client := pair(b, socket.Config{})
	msg := clientFrame(0x81, bytes.Repeat([]byte{'x'}, 100))
	batch := bytes.Repeat(msg, 256)
	go func() {
		for {
			if _, err := client.NetConn().Write(batch); err != nil {
				return
			}
		}
	}()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Read(); err != nil {
			b.Fatal(err)
		}
	}
}

// clientFrame builds one final frame as a client sends it: masked.
func clientFrame(op byte, payload []byte) []byte {
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	b := []byte{op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}
