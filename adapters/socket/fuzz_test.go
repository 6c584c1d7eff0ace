package socket_test

import (
	"bytes"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsserver/wsserver/adapters/socket"
)

// FuzzClientBytes sends arbitrary bytes after the handshake to a server
// that echoes every message, and checks what the server writes back:
// well-formed frames only, at most one close frame and nothing after it,
// and the connection ends.
func FuzzClientBytes(f *testing.F) {
	x := bytes.Repeat([]byte{'x'}, 300)
	for _, seed := range [][]byte{
		clientFrame(0x81, []byte("hello")),
		append(clientFrame(0x89, []byte("ping")), clientFrame(0x81, []byte("after a ping"))...),
		append(clientFrame(0x8a, nil), clientFrame(0x88, []byte{0x03, 0xe8})...),
		clientFrame(0x81, x),
		append(clientFrame(0x01, x[:200]), clientFrame(0x80, x[:200])...),
		append(clientFrame(0x01, []byte("a")), append(clientFrame(0x89, nil), clientFrame(0x80, []byte("b"))...)...),
		{0x81, 0x00},
		clientFrame(0xa1, []byte("x")),
		clientFrame(0x83, []byte("x")),
		clientFrame(0x09, []byte("x")),
		clientFrame(0x88, []byte{0x03, 0xe7}),
		clientFrame(0x88, []byte{0x03, 0xe8, 0xff}),
		{0x81, 0x80 | 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4},
		bytes.Repeat(clientFrame(0x89, []byte("p")), 300),
	} {
		f.Add(seed)
	}
	hs := serveFuzz(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		client := dialRaw(t, hs)
		frames := make(chan []rawFrame, 1)
		go func() { frames <- client.readAll() }()
		_, _ = client.nc.Write(input)
		// The server reads to the end of the input, then the end of the
		// stream: it must end the connection, whatever it made of it.
		_ = client.nc.(*net.TCPConn).CloseWrite()
		var got []rawFrame
		select {
		case got = <-frames:
		case <-time.After(wait):
			t.Fatal("the server did not end the connection")
		}
		closes := 0
		for i, fr := range got {
			if fr.op&0x80 == 0 || fr.op&0x70 != 0 {
				t.Fatalf("frame %d: first byte %#x: not final or reserved bits set", i, fr.op)
			}
			switch fr.opcode() {
			case websocket.TextMessage:
			case websocket.PingMessage, websocket.PongMessage, websocket.CloseMessage:
				if len(fr.payload) > 125 {
					t.Fatalf("frame %d: control frame of %d bytes", i, len(fr.payload))
				}
			default:
				t.Fatalf("frame %d: opcode %d", i, fr.opcode())
			}
			if closes > 0 {
				t.Fatalf("frame %d (%v) follows the close", i, fr)
			}
			if fr.opcode() == websocket.CloseMessage {
				closes++
			}
		}
	})
}

// serveFuzz starts a server for the fuzz target: a small read limit, so
// that inputs reach it, and a short wait for a close reply, so that each
// input ends soon.
func serveFuzz(f *testing.F) *httptest.Server {
	f.Helper()
	cfg := socket.Config{ReadLimit: 256, CloseWait: 200 * time.Millisecond}
	return serve(f, nil, cfg, func(c *socket.Conn) {
		for {
			p, err := c.Read()
			if err != nil {
				break
			}
			c.SendText(p)
		}
		c.SendText([]byte("after"))
		c.Finish()
	})
}
