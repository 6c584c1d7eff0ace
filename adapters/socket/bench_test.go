package socket_test

import (
	"bytes"
	"io"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/gorilla/websocket"

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

// BenchmarkFanout measures one broadcast to many sockets, as a large
// session sends it: a shared 100-byte frame queued on every socket, and
// written, until each client has read it. Clients read raw bytes. Besides
// time, it reports the process's CPU (user + system, the clients' reading
// included) per delivery: on a shared machine that moves far less than
// time does.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchmarkFanout(b, n) })
	}
}

func benchmarkFanout(b *testing.B, n int) {
	b.Helper()
	conns := make(chan *socket.Conn, n)
	hs := serve(b, nil, socket.Config{}, func(c *socket.Conn) { conns <- c })
	frame := socket.Frame(bytes.Repeat([]byte{'x'}, 100))
	var received, target atomic.Int64
	arrived := make(chan struct{}, 1)
	servers := make([]*socket.Conn, n)
	for i := range n {
		ws, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		b.Cleanup(func() { ws.Close() })
		servers[i] = <-conns
		b.Cleanup(servers[i].Finish)
		go func() {
			buf := make([]byte, 4096)
			for {
				k, err := ws.NetConn().Read(buf)
				if err != nil {
					return
				}
				// The read that completes the broadcast tells the sender.
				v := received.Add(int64(k))
				if t := target.Load(); v-int64(k) < t && v >= t {
					arrived <- struct{}{}
				}
			}
		}()
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := range b.N {
		target.Store(int64(i+1) * int64(n) * int64(len(frame)))
		for _, c := range servers {
			c.Send(frame)
		}
		<-arrived
	}
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N*n), "cpu-ns/delivery")
}

// processCPU is the CPU time (user + system) the process has used, in ns.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
