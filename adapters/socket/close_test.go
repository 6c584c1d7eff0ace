package socket_test

import (
	"bytes"
	"runtime"
	"testing"
	"time"
	"weak"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/socket"
)

// badInput sends input to a server that streams frames to the client all
// along, as a busy session does, and returns every frame the client got
// and the error that ended the server's reader. After that error the
// server sends once more, as a broadcast arriving at that moment would.
func badInput(t *testing.T, cfg socket.Config, input []byte) ([]rawFrame, error) {
	t.Helper()
	readErr := make(chan error, 1)
	hs := serve(t, nil, cfg, func(c *socket.Conn) {
		stop, streamed := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(streamed)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
					c.SendText([]byte("tick"))
				}
			}
		}()
		var err error
		for err == nil {
			_, err = c.Read()
		}
		c.SendText([]byte("after"))
		close(stop)
		<-streamed
		c.Finish()
		readErr <- err
	})
	client := dialRaw(t, hs)
	frames := make(chan []rawFrame, 1)
	go func() { frames <- client.readAll() }()
	_, err := client.nc.Write(input)
	require.NoError(t, err)
	var got []rawFrame
	select {
	case got = <-frames:
	case <-time.After(wait):
		t.Fatal("the connection did not end")
	}
	select {
	case err = <-readErr:
	case <-time.After(wait):
		t.Fatal("the server's reader did not end")
	}
	return got, err
}

func TestNothingFollowsCloseForTooBig(t *testing.T) {
	x := func(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"one frame", clientFrame(0x81, x(4096))},
		{"one byte over", clientFrame(0x81, x(1025))},
		{"fragments", append(clientFrame(0x01, x(600)), clientFrame(0x80, x(600))...)},
		{"length past 2^63", []byte{0x81, 0x80 | 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frames, err := badInput(t, socket.Config{ReadLimit: 1024}, tc.input)
			requireOneCloseLast(t, frames, socket.CloseTooBig)
			require.ErrorIs(t, err, websocket.ErrReadLimit)
		})
	}
}

func TestNothingFollowsCloseForProtocolError(t *testing.T) {
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"unmasked frame", []byte{0x81, 0x00}},
		{"reserved bit", clientFrame(0xa1, []byte("x"))},
		{"unknown opcode", clientFrame(0x83, []byte("x"))},
		{"long control frame", clientFrame(0x89, bytes.Repeat([]byte{'x'}, 126))},
		{"fragmented control frame", clientFrame(0x09, []byte("x"))},
		{"continuation first", clientFrame(0x80, []byte("x"))},
		{"text inside a message", append(clientFrame(0x01, []byte("x")), clientFrame(0x81, []byte("y"))...)},
		{"bad close code", clientFrame(0x88, []byte{0x03, 0xe7})},
		{"close reason not UTF-8", clientFrame(0x88, []byte{0x03, 0xe8, 0xff})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frames, err := badInput(t, socket.Config{}, tc.input)
			requireOneCloseLast(t, frames, websocket.CloseProtocolError)
			require.Error(t, err)
		})
	}
}

func TestMessageAtTheLimitIsRead(t *testing.T) {
	c, client := pair(t, socket.Config{ReadLimit: 1024})
	for _, n := range []int{0, 1, 1023, 1024} {
		require.NoError(t, client.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte{'x'}, n)))
		p, err := c.Read()
		require.NoError(t, err)
		assert.Len(t, p, n)
	}
}

func TestClosedConnIsReleased(t *testing.T) {
	// A socket whose close handshake is done is gone at once, not kept
	// until the close's backstop (CloseWait+WriteTimeout, a minute here):
	// a client that connects and closes in a loop would pile them up.
	conns := make(chan weak.Pointer[socket.Conn], 1)
	hs := serve(t, nil, socket.Config{WriteTimeout: time.Minute}, func(c *socket.Conn) {
		conns <- weak.Make(c)
		c.Close(socket.CloseNormal, "bye")
		for {
			if _, err := c.Read(); err != nil {
				break
			}
		}
		c.Finish()
	})
	client := dial(t, hs)
	require.NoError(t, client.SetReadDeadline(time.Now().Add(wait)))
	_, _, err := client.ReadMessage() // the close, which gorilla answers
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	_, err = client.NetConn().Read(make([]byte, 1)) // the server ends the connection
	require.Error(t, err)
	c := <-conns
	deadline := time.After(wait)
	for {
		runtime.GC()
		if c.Value() == nil {
			return
		}
		select {
		case <-deadline:
			t.Fatal("a closed socket is still held")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
