// Package socket is one WebSocket connection as the server runs it: one
// reader, a bounded send queue that never blocks the sender, and a writer
// that runs only while there is something to write and sends everything
// queued in one system call. gorilla/websocket does the handshake and the
// reading; frames are written here, ready-made, so that a broadcast is
// framed once and the same bytes go to every socket.
package socket

import (
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Close codes used by the server.
const (
	CloseNormal       = websocket.CloseNormalClosure     // 1000
	CloseGoingAway    = websocket.CloseGoingAway         // 1001
	ClosePolicy       = websocket.ClosePolicyViolation   // 1008
	CloseTooBig       = websocket.CloseMessageTooBig     // 1009
	CloseInternal     = websocket.CloseInternalServerErr // 1011
	CloseServiceReset = websocket.CloseServiceRestart    // 1012
)

// Config is shared by the connections of one server.
type Config struct {
	// MaxQueue is how many frames may wait for a socket; one more and the
	// socket is closed with 1008. Zero means 512.
	MaxQueue int
	// WriteTimeout bounds each write. Zero means 10 seconds.
	WriteTimeout time.Duration
	// PingInterval is the keepalive period; a peer silent for twice that is
	// dropped. Zero means 25 seconds.
	PingInterval time.Duration
	// ReadLimit is the largest message accepted; larger closes with 1009.
	// Zero means 64 KiB.
	ReadLimit int64
	// CloseWait bounds the wait for the peer's reply to a close. Zero
	// means 2 seconds.
	CloseWait time.Duration
	// OnSlow is called when a socket is dropped for a full queue.
	OnSlow func()
	// OnWritten is called with the number of frames of each write.
	OnWritten func(frames int)
}

func (c *Config) defaults() {
	if c.MaxQueue <= 0 {
		c.MaxQueue = 512
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 64 << 10
	}
	if c.CloseWait <= 0 {
		c.CloseWait = 2 * time.Second
	}
	if c.OnSlow == nil {
		c.OnSlow = func() {}
	}
	if c.OnWritten == nil {
		c.OnWritten = func(int) {}
	}
}

// Server holds the settings shared by every connection.
type Server struct {
	cfg Config
}

// NewServer returns a Server for cfg; zero fields take their defaults.
func NewServer(cfg Config) *Server {
	cfg.defaults()
	return &Server{cfg: cfg}
}

// Conn is one server-side WebSocket. Send and Close may be called from any
// goroutine; Read only from the connection's reader.
type Conn struct {
	ws  *websocket.Conn
	nc  net.Conn
	cfg *Config

	mu       sync.Mutex
	ping     *time.Timer
	queue    [][]byte
	spare    [][]byte
	writing  bool // a writer goroutine runs
	closing  bool // a close frame is queued: nothing more is sent
	finished bool // the reader is done: close the TCP connection when idle
	shut     bool // the TCP connection is closed
}

// Wrap takes over an upgraded connection.
func (s *Server) Wrap(ws *websocket.Conn) *Conn {
	c := &Conn{ws: ws, nc: ws.NetConn(), cfg: &s.cfg}
	ws.SetReadLimit(s.cfg.ReadLimit)
	ws.SetPingHandler(func(data string) error {
		c.enqueue(pongFrame([]byte(data)), false)
		return c.extend()
	})
	ws.SetPongHandler(func(string) error { return c.extend() })
	ws.SetCloseHandler(func(code int, text string) error {
		// Answer the peer's close with its code, unless we closed first.
		if code == websocket.CloseNoStatusReceived {
			code = CloseNormal
		}
		c.Close(code, "")
		return nil
	})
	_ = c.extend()
	c.mu.Lock()
	c.ping = time.AfterFunc(s.cfg.PingInterval, c.sendPing)
	c.mu.Unlock()
	return c
}

func (c *Conn) extend() error {
	return c.nc.SetReadDeadline(time.Now().Add(2 * c.cfg.PingInterval))
}

func (c *Conn) sendPing() {
	if c.enqueue(pingFrame, false) {
		c.mu.Lock()
		c.ping.Reset(c.cfg.PingInterval)
		c.mu.Unlock()
	}
}

// Read returns the next message. Every message read renews the peer's
// keepalive deadline.
func (c *Conn) Read() ([]byte, error) {
	_, p, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	if err := c.extend(); err != nil {
		return nil, err
	}
	return p, nil
}

// Send queues a ready-made frame (see Frame) without blocking. When the
// queue is full the socket is closed with 1008: a client that cannot keep
// up is dropped rather than allowed to slow the others.
func (c *Conn) Send(frame []byte) {
	c.enqueue(frame, true)
}

// SendText frames payload and queues it.
func (c *Conn) SendText(payload []byte) {
	c.enqueue(Frame(payload), true)
}

// enqueue adds frame to the queue and starts the writer if it is idle. It
// reports whether the frame was queued.
func (c *Conn) enqueue(frame []byte, data bool) bool {
	c.mu.Lock()
	if c.closing || c.shut {
		c.mu.Unlock()
		return false
	}
	if data && len(c.queue) >= c.cfg.MaxQueue {
		// Drop what has not been handed to the writer yet; the close
		// frame goes out next.
		clear(c.queue)
		c.queue = c.queue[:0]
		c.closeLocked(ClosePolicy, "send queue full")
		c.mu.Unlock()
		c.cfg.OnSlow()
		return false
	}
	c.queue = append(c.queue, frame)
	c.startWriterLocked()
	c.mu.Unlock()
	return true
}

func (c *Conn) startWriterLocked() {
	if !c.writing {
		c.writing = true
		go c.write()
	}
}

// Close queues a close frame after what is already queued, and closes the
// connection once the peer answers or CloseWait passes. Later sends are
// dropped. Closing twice does nothing.
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	c.closeLocked(code, reason)
	c.mu.Unlock()
}

func (c *Conn) closeLocked(code int, reason string) {
	if c.closing || c.shut {
		return
	}
	c.closing = true
	c.queue = append(c.queue, closeFrame(code, reason))
	c.startWriterLocked()
	// Whatever the peer does, the connection ends.
	time.AfterFunc(c.cfg.CloseWait+c.cfg.WriteTimeout, c.shutdown)
}

// write sends the queue until it is empty, all queued frames in one
// system call per round, then exits: an idle socket has no writer.
func (c *Conn) write() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || c.shut {
			c.writing = false
			done := c.finished || c.shut
			closing := c.closing
			c.mu.Unlock()
			switch {
			case done:
				c.shutdown()
			case closing:
				// The close frame is out: wait briefly for the peer's reply.
				_ = c.nc.SetReadDeadline(time.Now().Add(c.cfg.CloseWait))
			}
			return
		}
		batch := c.queue
		c.queue, c.spare = c.spare[:0], nil
		c.mu.Unlock()

		bufs := net.Buffers(batch)
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		_, err := bufs.WriteTo(c.nc)
		c.cfg.OnWritten(len(batch))
		clear(batch)

		c.mu.Lock()
		if cap(batch) <= 64 {
			c.spare = batch[:0]
		}
		c.mu.Unlock()
		if err != nil {
			c.shutdown()
		}
	}
}

// Finish is called by the reader when it is done: the connection closes
// once the writer has sent what it holds (a close reply, say).
func (c *Conn) Finish() {
	c.mu.Lock()
	c.ping.Stop()
	c.finished = true
	idle := !c.writing
	c.mu.Unlock()
	if idle {
		c.shutdown()
	}
}

// shutdown closes the TCP connection; the reader then returns an error.
func (c *Conn) shutdown() {
	c.mu.Lock()
	if c.shut {
		c.mu.Unlock()
		return
	}
	c.shut = true
	clear(c.queue)
	c.queue, c.spare = nil, nil
	c.ping.Stop()
	c.mu.Unlock()
	_ = c.nc.Close()
}
