package socket_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/socket"
)

// A raw client speaks the WebSocket protocol byte by byte, so that a test
// sees every frame the server writes, in order, and can send frames no
// well-behaved client library would.

// serve starts a server whose handler wraps each upgraded socket and hands
// it to handle, on the handler's goroutine.
func serve(t testing.TB, ln net.Listener, cfg socket.Config, handle func(*socket.Conn)) *httptest.Server {
	t.Helper()
	srv := socket.NewServer(cfg)
	up := websocket.Upgrader{}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := srv.Upgrade(&up, w, r)
		if err != nil {
			return
		}
		handle(c)
	}))
	if ln != nil {
		hs.Listener.Close()
		hs.Listener = ln
	}
	hs.Start()
	t.Cleanup(hs.Close)
	return hs
}

type rawClient struct {
	nc net.Conn
	br *bufio.Reader
}

// dialRaw opens a WebSocket to hs by hand.
func dialRaw(t *testing.T, hs *httptest.Server) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", hs.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	require.NoError(t, nc.SetDeadline(time.Now().Add(30*time.Second)))
	_, err = io.WriteString(nc, "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	require.NoError(t, err)
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	return &rawClient{nc: nc, br: br}
}

type rawFrame struct {
	op      byte // the first byte: FIN, RSV and opcode
	payload []byte
}

func (f rawFrame) opcode() int { return int(f.op & 0x0f) }

func (f rawFrame) closeCode() int {
	if len(f.payload) < 2 {
		return websocket.CloseNoStatusReceived
	}
	return int(binary.BigEndian.Uint16(f.payload))
}

func (f rawFrame) String() string {
	if f.opcode() == websocket.CloseMessage {
		return "close " + string(f.payload[min(2, len(f.payload)):])
	}
	return string(rune('0'+f.opcode())) + ":" + string(f.payload)
}

// readFrame reads one server frame; server frames are never masked.
func (r *rawClient) readFrame() (rawFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r.br, h[:]); err != nil {
		return rawFrame{}, err
	}
	if h[1]&0x80 != 0 {
		return rawFrame{}, errors.New("masked server frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return rawFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r.br, b[:]); err != nil {
			return rawFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	if n > 1<<20 {
		return rawFrame{}, errors.New("server frame too large for a test")
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r.br, p); err != nil {
		return rawFrame{}, err
	}
	return rawFrame{op: h[0], payload: p}, nil
}

// readAll reads frames until the server ends the connection, answering its
// close as a browser does.
func (r *rawClient) readAll() []rawFrame {
	var frames []rawFrame
	for {
		f, err := r.readFrame()
		if err != nil {
			return frames
		}
		frames = append(frames, f)
		if f.opcode() == websocket.CloseMessage {
			_, _ = r.nc.Write(clientFrame(0x88, f.payload[:min(2, len(f.payload))]))
		}
	}
}

// requireOneCloseLast checks that frames hold exactly one close frame,
// with code, and nothing after it.
func requireOneCloseLast(t *testing.T, frames []rawFrame, code int) {
	t.Helper()
	require.NotEmpty(t, frames, "no frame at all")
	var closes []int
	for i, f := range frames {
		if f.opcode() != websocket.CloseMessage {
			continue
		}
		closes = append(closes, f.closeCode())
		require.Equal(t, len(frames)-1, i, "frames after the close: %v", frames[i:])
	}
	require.Equal(t, []int{code}, closes, "close frames")
}

// gatedListener accepts connections whose writes wait while gate is
// locked: the test holds the server's writer still.
type gatedListener struct {
	net.Listener
	gate *sync.RWMutex
}

func (l gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return gatedConn{Conn: c, gate: l.gate}, nil
}

type gatedConn struct {
	net.Conn
	gate *sync.RWMutex
}

func (c gatedConn) Write(p []byte) (int, error) {
	c.gate.RLock()
	defer c.gate.RUnlock()
	return c.Conn.Write(p)
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

func wsURL(hs *httptest.Server) string { return "ws" + strings.TrimPrefix(hs.URL, "http") }

// wait bounds every wait of these tests against a hang; nothing is timed.
const wait = 30 * time.Second

// dial opens a gorilla client to hs.
func dial(t *testing.T, hs *httptest.Server) *websocket.Conn {
	t.Helper()
	client, resp, err := websocket.DefaultDialer.Dial(wsURL(hs), nil)
	if resp != nil {
		resp.Body.Close()
	}
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	return client
}
