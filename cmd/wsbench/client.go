package main

import (
	"errors"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// readLimit caps one server message; presence replies of thousands of
	// connections are the largest.
	readLimit = 32 << 20
	// writeTimeout bounds every write, so a stuck server cannot hang a run.
	writeTimeout = 5 * time.Second
	// closeTimeout bounds the close frame sent when a run ends.
	closeTimeout = 200 * time.Millisecond
)

// handler receives a socket's messages after its hello is done. Its methods
// run on the socket's reader goroutine, one at a time, so per-socket state
// needs no locking; read it only after the reader has stopped.
type handler interface {
	// message is called for every parsed message; m (and the byte slices it
	// holds) is only valid during the call. now is when it was read.
	message(m *message, now time.Time)
}

// client is one benchmark WebSocket. Only its reader goroutine reads; one
// goroutine at a time writes (the connector for hello, then the
// subcommand's sender).
type client struct {
	idx     int // socket number, 0..n-1
	server  int // index into target.urls
	session int // session number; the id is prefix + session
	conn    *websocket.Conn
	h       handler

	buf []byte // reused for every message read
	msg message

	helloDone chan struct{} // closed by the reader at the first message or error
	helloErr  error         // why hello failed; written before helloDone closes

	alive   atomic.Bool // connected and not closed by the server
	closing atomic.Bool // wsbench closes it: read errors are expected
}

// write sends one text message under the write timeout.
func (c *client) write(b []byte) error {
	if err := c.conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	return c.conn.WriteMessage(websocket.TextMessage, b)
}

// close sends a normal close frame and closes the connection.
func (c *client) close() {
	c.closing.Store(true)
	_ = c.conn.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
		time.Now().Add(closeTimeout))
	_ = c.conn.Close()
}

// read returns the next message in c.buf, growing it when needed, so reading
// does not allocate once the buffer has reached the largest message size.
func (c *client) read() ([]byte, error) {
	_, r, err := c.conn.NextReader()
	if err != nil {
		return nil, err
	}
	b := c.buf[:0]
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, max(cap(b), 512))
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			c.buf = b
			return b, nil
		}
		if err != nil {
			c.buf = b
			return nil, err
		}
	}
}

// readLoop reads until the connection fails or is closed. The first message
// finishes the hello: hello_ok and an error are consumed here, anything else
// (a server without hello_ok) also goes to the handler.
func (c *client) readLoop(errs *tally) {
	hello := false
	for {
		b, err := c.read()
		if err != nil {
			c.alive.Store(false)
			if !hello {
				c.helloErr = err
				close(c.helloDone)
			}
			if !c.closing.Load() {
				errs.add("read: " + errKind(err))
			}
			return
		}
		now := time.Now()
		if err := parseMessage(b, &c.msg); err != nil {
			errs.add("unparsable message")
			continue
		}
		if c.msg.kind == kindError {
			errs.add("error message: " + errorMessageName(&c.msg))
		}
		if !hello {
			hello = true
			switch c.msg.kind {
			case kindHelloOK:
				close(c.helloDone)
				continue
			case kindError:
				c.helloErr = errors.New("hello refused: " + errorMessageName(&c.msg))
				close(c.helloDone)
				continue
			}
			close(c.helloDone)
		}
		c.h.message(&c.msg, now)
	}
}

// errorMessageName is the tally key of an error message: its code, or its
// text when it has no code (the reference server).
func errorMessageName(m *message) string {
	if len(m.code) > 0 {
		return jsonString(m.code)
	}
	return truncate(jsonString(m.text), 60)
}
