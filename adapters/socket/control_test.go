package socket_test

import (
	"bytes"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/socket"
)

// readUntilError reads c in the background, as the server's reader does,
// and delivers the error that ends it.
func readUntilError(c *socket.Conn) <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Read(); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

func TestPingFloodKeepsOnePongPending(t *testing.T) {
	// The server's writes wait at the gate: its peer reads nothing and
	// the kernel's buffers are full. Thousands of pings must not queue
	// thousands of pongs.
	var gate sync.RWMutex
	conns := make(chan *socket.Conn, 1)
	hs := serve(t, gatedListener{listen(t), &gate}, socket.Config{WriteTimeout: time.Minute},
		func(c *socket.Conn) { conns <- c })
	client := dial(t, hs)
	c := <-conns
	t.Cleanup(c.Finish)
	readErr := readUntilError(c)

	gate.Lock()
	const flood = 5000
	var err error
	for i := 0; i < flood && err == nil; i++ {
		err = client.WriteControl(websocket.PingMessage, []byte(strconv.Itoa(i)), time.Now().Add(wait))
	}
	if err == nil {
		// The close is read after every ping: once the server's reader
		// ends, it has seen them all.
		err = client.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(wait))
	}
	if err == nil {
		select {
		case <-readErr:
		case <-time.After(wait):
			err = assert.AnError
		}
	}
	peak := socket.QueuePeak(c)
	gate.Unlock()
	require.NoError(t, err)
	assert.LessOrEqual(t, peak, 2, "frames queued at once for a peer that reads nothing")

	// What waited is sent: the pong the writer held when the gate closed,
	// if it had taken one, a pong for the latest ping within the budget,
	// then the close.
	var pongs []int
	client.SetPongHandler(func(p string) error {
		n, err := strconv.Atoi(p)
		pongs = append(pongs, n)
		return err
	})
	require.NoError(t, client.SetReadDeadline(time.Now().Add(wait)))
	_, _, err = client.ReadMessage()
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, socket.ClosePolicy, ce.Code)
	assert.Equal(t, "too many control frames", ce.Text)
	require.NotEmpty(t, pongs)
	assert.LessOrEqual(t, len(pongs), 2, "pongs: %v", pongs)
	assert.IsIncreasing(t, pongs)
	last := pongs[len(pongs)-1]
	assert.GreaterOrEqual(t, last, 99, "the default burst answers 100 pings")
	assert.Less(t, last, flood-1, "pings past the budget are not answered")
}

func TestControlFloodIsClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   int
	}{
		{"pings", websocket.PingMessage},
		{"unsolicited pongs", websocket.PongMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, client := pair(t, socket.Config{})
			readErr := readUntilError(c)
			go func() {
				for i := 0; i < 20000; i++ {
					if client.WriteControl(tc.op, []byte("flood"), time.Now().Add(wait)) != nil {
						return
					}
				}
			}()
			require.NoError(t, client.SetReadDeadline(time.Now().Add(wait)))
			var err error
			for err == nil {
				_, _, err = client.ReadMessage()
			}
			var ce *websocket.CloseError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, socket.ClosePolicy, ce.Code)
			assert.Equal(t, "too many control frames", ce.Text)
			select {
			case err := <-readErr:
				require.ErrorContains(t, err, "too many control frames")
			case <-time.After(wait):
				t.Fatal("the server kept reading a flooding peer")
			}
		})
	}
}

func TestServerAnswersPings(t *testing.T) {
	// A client that pings now and then gets each pong with its ping's
	// payload, up to the 125 bytes a control frame may carry.
	c, client := pair(t, socket.Config{})
	readUntilError(c)
	pongs := make(chan string, 1)
	client.SetPongHandler(func(data string) error { pongs <- data; return nil })
	go func() {
		for {
			if _, _, err := client.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for i := range 50 {
		payload := strings.Repeat(strconv.Itoa(i%10), 1+i*124/49)
		require.NoError(t, client.WriteControl(websocket.PingMessage, []byte(payload), time.Now().Add(wait)))
		select {
		case got := <-pongs:
			require.Equal(t, payload, got)
		case <-time.After(wait):
			t.Fatalf("no pong for ping %d", i)
		}
	}
}

func TestQueueIsBoundedInBytes(t *testing.T) {
	// 200 frames of 64 KiB fit in the default MaxQueue of 512 frames but
	// not in the default 4 MiB: a peer that reads nothing while large
	// broadcasts pile up is dropped with 1008 before it holds 12 MiB. The
	// writer waits at the gate; whatever batch it took holds at most the
	// bound, so more than the bound remains queued.
	var gate sync.RWMutex
	var slow atomic.Int32
	conns := make(chan *socket.Conn, 1)
	hs := serve(t, gatedListener{listen(t), &gate}, socket.Config{WriteTimeout: time.Minute, OnSlow: func() { slow.Add(1) }},
		func(c *socket.Conn) { conns <- c })
	client := dial(t, hs)
	c := <-conns
	t.Cleanup(c.Finish)
	readUntilError(c)

	gate.Lock()
	frame := socket.Frame(bytes.Repeat([]byte{'x'}, 64<<10))
	for range 200 {
		c.Send(frame)
	}
	gate.Unlock()
	assert.Equal(t, int32(1), slow.Load(), "slow consumers dropped")
	require.NoError(t, client.SetReadDeadline(time.Now().Add(wait)))
	var err error
	for err == nil {
		_, _, err = client.ReadMessage()
	}
	var ce *websocket.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, socket.ClosePolicy, ce.Code)
	assert.Equal(t, "send queue full", ce.Text)
}
