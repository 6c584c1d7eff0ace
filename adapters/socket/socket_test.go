package socket_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/socket"
)

// pair returns a server-side Conn and the client talking to it.
func pair(t testing.TB, cfg socket.Config) (*socket.Conn, *websocket.Conn) {
	t.Helper()
	srv := socket.NewServer(cfg)
	conns := make(chan *socket.Conn, 1)
	up := websocket.Upgrader{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := srv.Upgrade(&up, w, r)
		if err != nil {
			return
		}
		conns <- c
	}))
	t.Cleanup(hs.Close)
	client, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if resp != nil {
		resp.Body.Close()
	}
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	c := <-conns
	t.Cleanup(c.Finish)
	return c, client
}

func TestFramesOfEverySize(t *testing.T) {
	c, client := pair(t, socket.Config{})
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 200000}
	for _, n := range sizes {
		c.SendText(bytes.Repeat([]byte{'x'}, n))
	}
	for _, n := range sizes {
		require.NoError(t, client.SetReadDeadline(time.Now().Add(10*time.Second)))
		typ, p, err := client.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, websocket.TextMessage, typ)
		assert.Len(t, p, n)
	}
}

func TestSharedFramesKeepTheirOrder(t *testing.T) {
	c, client := pair(t, socket.Config{MaxQueue: 10000})
	frames := make([][]byte, 1000)
	for i := range frames {
		frames[i] = socket.Frame([]byte(strings.Repeat("y", i%300)))
		c.Send(frames[i])
	}
	for i := range frames {
		require.NoError(t, client.SetReadDeadline(time.Now().Add(10*time.Second)))
		_, p, err := client.ReadMessage()
		require.NoError(t, err)
		require.Len(t, p, i%300)
	}
}

func TestCloseAfterQueuedFrames(t *testing.T) {
	c, client := pair(t, socket.Config{})
	c.SendText([]byte("last words"))
	c.Close(socket.CloseNormal, "escalation")
	c.SendText([]byte("never sent"))
	_, p, err := client.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "last words", string(p))
	_, _, err = client.ReadMessage()
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, socket.CloseNormal, ce.Code)
	assert.Equal(t, "escalation", ce.Text)
}

func TestServerPingsIdlePeers(t *testing.T) {
	_, client := pair(t, socket.Config{PingInterval: 20 * time.Millisecond})
	pinged := make(chan struct{}, 1)
	client.SetPingHandler(func(string) error {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return nil
	})
	go func() { _, _, _ = client.ReadMessage() }()
	select {
	case <-pinged:
	case <-time.After(10 * time.Second):
		t.Fatal("no keepalive ping")
	}
}

func TestSilentPeerIsDropped(t *testing.T) {
	// The client reads (so it answers nothing: gorilla's client answers
	// pings only while reading) — here it never reads at all, so the
	// server's read deadline of two intervals ends the connection.
	c, _ := pair(t, socket.Config{PingInterval: 20 * time.Millisecond})
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Read(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("a silent peer was kept")
	}
}

func TestPeerThatReadsLateGetsEveryByteInOrder(t *testing.T) {
	// The client reads nothing until far more than the kernel buffers
	// hold is sent: the server's writes stop part-way through frames,
	// wait for the peer, and must go on exactly where they stopped. Then,
	// with the peer reading, the socket writes as an idle one does again.
	const frames, size = 400, 24 << 10 // ~9.6 MB
	c, client := pair(t, socket.Config{MaxQueue: 10 * frames, MaxQueueBytes: 64 << 20, WriteTimeout: time.Minute})
	payload := func(i int) []byte {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, size+i%7)
		copy(p, strconv.Itoa(i))
		return p
	}
	for i := range frames {
		c.Send(socket.Frame(payload(i)))
	}
	for i := range frames + 1 {
		if i == frames {
			c.SendText([]byte("after"))
		}
		require.NoError(t, client.SetReadDeadline(time.Now().Add(wait)))
		_, p, err := client.ReadMessage()
		require.NoError(t, err)
		if i == frames {
			assert.Equal(t, "after", string(p))
			break
		}
		require.True(t, bytes.Equal(payload(i), p), "frame %d differs", i)
	}
}

func TestMessagesReadAheadAreServedWithoutWaiting(t *testing.T) {
	// Three messages in one TCP segment: the first read takes them all into
	// the read buffer, so the socket has nothing more to read while two
	// messages wait. A reader that waited for the socket would hang.
	got := make(chan string, 3)
	hs := serve(t, nil, socket.Config{}, func(c *socket.Conn) {
		for {
			p, err := c.Read()
			if err != nil {
				return
			}
			got <- string(p)
		}
	})
	client := dialRaw(t, hs)
	var batch []byte
	for _, m := range []string{"one", "two", "three"} {
		batch = append(batch, clientFrame(0x81, []byte(m))...)
	}
	_, err := client.nc.Write(batch)
	require.NoError(t, err)
	for _, want := range []string{"one", "two", "three"} {
		select {
		case p := <-got:
			assert.Equal(t, want, p)
		case <-time.After(wait):
			t.Fatalf("message %q was not read", want)
		}
	}
}
