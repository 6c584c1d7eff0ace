package socket

import (
	"bufio"
	"net"
	"net/http"

	"github.com/gorilla/websocket"
)

// An idle socket should cost little: a small read buffer, and a reader
// goroutine parked on a small stack. Reading through gorilla parks the
// reader some 15 calls deep (frame parsing, bufio, net), which takes its
// stack past Go's initial 2 KiB; waiting for the socket to be readable
// before reading parks it 6 calls deep instead. That wait is only right
// when gorilla holds no bytes read ahead, which only the owner of its
// read buffer can tell: so Upgrade hands gorilla a buffer of its own.

// readBufferSize is the read buffer of an upgraded socket. Frames larger
// than it are read through it; session and chat messages rarely are.
const readBufferSize = 512

// Upgrade upgrades the request with u, reading through a buffer of the
// Conn's own, and wraps the connection. On failure u has answered the
// request. u's ReadBufferSize is not used.
func (s *Server) Upgrade(u *websocket.Upgrader, w http.ResponseWriter, r *http.Request) (*Conn, error) {
	h := &hijacker{ResponseWriter: w}
	up := *u
	up.ReadBufferSize = 0 // gorilla then reads through the hijacked reader: h.br
	ws, err := up.Upgrade(h, r, nil)
	if err != nil {
		return nil, err
	}
	c := s.Wrap(ws)
	c.br = h.br
	return c, nil
}

// hijacker gives the hijacked connection a small read buffer of its own.
type hijacker struct {
	http.ResponseWriter
	br *bufio.Reader
}

func (h *hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	nc, brw, err := hj.Hijack()
	if err != nil || brw.Reader.Buffered() > 0 {
		// gorilla refuses a client that sent data before its
		// handshake was answered.
		return nc, brw, err
	}
	h.br = bufio.NewReaderSize(nc, readBufferSize)
	brw.Reader = h.br
	return nc, brw, nil
}

// awaitData parks the reader until the peer has sent something (or the
// connection fails or its read deadline passes: the read that follows
// then returns the error), when gorilla has nothing read ahead.
func (c *Conn) awaitData() {
	if c.br == nil || c.raw == nil || c.br.Buffered() > 0 {
		return
	}
	_ = c.raw.Read(peek)
}
