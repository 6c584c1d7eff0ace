// Package socket is one WebSocket connection as the server runs it: one
// reader, a bounded send queue that never blocks the sender, and a writer
// that runs only while there is something to write and sends everything
// queued in one system call (the server's flushers, flush.go, or a
// goroutine of the socket's own while its peer is slow to read). gorilla/websocket does the handshake and the
// reading; frames are written here, ready-made, so that a broadcast is
// framed once and the same bytes go to every socket.
package socket

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Close codes used by the server.
const (
	CloseNormal       = websocket.CloseNormalClosure     // 1000
	CloseGoingAway    = websocket.CloseGoingAway         // 1001
	ClosePolicy       = websocket.ClosePolicyViolation   // 1008
	CloseProtocol     = websocket.CloseProtocolError     // 1002
	CloseTooBig       = websocket.CloseMessageTooBig     // 1009
	CloseInternal     = websocket.CloseInternalServerErr // 1011
	CloseServiceReset = websocket.CloseServiceRestart    // 1012
)

// Defaults of Config, which are also the defaults of the settings that set
// them: SEND_QUEUE_SIZE, WS_WRITE_TIMEOUT, WS_PING_INTERVAL and MAX_FRAME_BYTES.
const (
	DefaultMaxQueue     = 512
	DefaultWriteTimeout = 10 * time.Second
	DefaultPingInterval = 25 * time.Second
	DefaultReadLimit    = 64 << 10
)

// Config is shared by the connections of one server.
type Config struct {
	// MaxQueue is how many frames may wait for a socket; one more and the
	// socket is closed with 1008. Zero means 512.
	MaxQueue int
	// MaxQueueBytes is how many bytes of frames may wait for a socket; a
	// frame that would pass it closes the socket with 1008, unless the
	// queue is empty. It bounds what a peer that reads nothing holds while
	// large broadcasts pile up. Zero means 4 MiB.
	MaxQueueBytes int
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
	// ControlRate is how many ping and pong frames a second a peer may
	// send over time, and ControlBurst how many at once; one more closes
	// the socket with 1008. Browsers send none; other clients ping every
	// few seconds and answer the server's pings. Zero means 10 a second
	// and 100.
	ControlRate  float64
	ControlBurst int
	// OnSlow is called when a socket is dropped for a full queue.
	OnSlow func()
	// OnWritten is called with the number of frames of each write.
	OnWritten func(frames int)
}

func (c *Config) defaults() {
	if c.MaxQueue <= 0 {
		c.MaxQueue = DefaultMaxQueue
	}
	if c.MaxQueueBytes <= 0 {
		c.MaxQueueBytes = 4 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.CloseWait <= 0 {
		c.CloseWait = 2 * time.Second
	}
	if c.ControlRate <= 0 {
		c.ControlRate = 10
	}
	if c.ControlBurst <= 0 {
		c.ControlBurst = 100
	}
	if c.OnSlow == nil {
		c.OnSlow = func() {}
	}
	if c.OnWritten == nil {
		c.OnWritten = func(int) {}
	}
}

// Server holds the settings and the flushers shared by every connection.
type Server struct {
	cfg      Config
	flushers *flusher
}

// NewServer returns a Server for cfg; zero fields take their defaults.
func NewServer(cfg Config) *Server {
	cfg.defaults()
	return &Server{cfg: cfg, flushers: newFlusher()}
}

// Conn is one server-side WebSocket. Send and Close may be called from any
// goroutine; Read only from the connection's reader.
//
// Every byte the peer receives after the handshake is written by the
// connection's writer, from the queue: gorilla is kept from writing (see
// mute), so nothing can follow a close frame. What one peer can make the
// server hold is bounded whatever it does: data frames by MaxQueue and
// MaxQueueBytes, a message by ReadLimit, and its pings by one pending pong
// within a budget of control frames.
type Conn struct {
	ws    *websocket.Conn
	nc    net.Conn
	cfg   *Config
	muted bool // gorilla cannot write to nc
	// raw is nc's socket for the server's flushers (flush.go)
	// to write; nil (TLS) means c writes on goroutines of its own.
	raw      syscall.RawConn
	flushers *flusher
	// br is gorilla's read buffer when Upgrade made it (see awaitData);
	// nil when it is not known.
	br *bufio.Reader

	// Owned by the reader.
	control bucket // the peer's budget of pings and pongs
	fault   error  // why the reader closed the socket on the peer: Read now drains
	readErr error  // what every later Read returns

	mu       sync.Mutex
	ping     *time.Timer
	backstop *time.Timer // ends the connection if the close handshake does not
	queue    [][]byte
	queued   int // bytes of the data frames in queue
	spare    [][]byte
	// pongs are the pending pong and the one being written, made at the
	// peer's first ping: most peers (browsers) never ping, and 254 bytes
	// are a third of an idle socket's Conn.
	pongs    *[2][2 + maxControl]byte
	pongNext int  // which of pongs the next pending pong is built in
	pongAt   int  // where the pending pong is in queue, or -1
	pinged   bool // our keepalive ping waits in queue
	writing  bool // a writer goroutine runs
	closing  bool // a close frame is queued: nothing more is sent
	finished bool // the reader is done: close the TCP connection when idle
	shut     bool // the TCP connection is closed
	peak     int  // the longest the queue has been, for tests
}

// maxControl is the most payload a control frame may carry.
const maxControl = 125

var (
	errTooManyControl = errors.New("socket: too many control frames")
	errTooBig         = errors.New("socket: message too big")
)

// Wrap takes over an upgraded connection.
func (s *Server) Wrap(ws *websocket.Conn) *Conn {
	c := &Conn{
		ws: ws, nc: ws.NetConn(), cfg: &s.cfg, pongAt: -1,
		control: newBucket(s.cfg.ControlRate, s.cfg.ControlBurst, time.Now()),
	}
	c.muted = mute(ws)
	if c.muted {
		c.raw, c.flushers = rawConn(c.nc), s.flushers
	}
	// The read limit is enforced by Read: gorilla's own would write a
	// close frame of its own.
	ws.SetReadLimit(0)
	ws.SetPingHandler(func(data string) error {
		if !c.allowControl() {
			return nil
		}
		c.pong(data)
		return c.extend()
	})
	ws.SetPongHandler(func(string) error {
		if !c.allowControl() {
			return nil
		}
		return c.extend()
	})
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

// mute makes gorilla unable to write to the connection. Gorilla writes on
// its own while reading: a close frame when a message is over its read
// limit or the peer breaks the protocol, straight to the socket, so it
// could follow or precede anything in our queue. It remembers its first
// write error and then writes nothing more; a write whose deadline has
// passed fails before a byte is sent. Over TLS this would break our own
// writes too (crypto/tls remembers the error as well), so there gorilla
// stays able to write and Read gives up the connection at its first error.
func mute(ws *websocket.Conn) bool {
	if _, ok := ws.NetConn().(*tls.Conn); ok {
		return false
	}
	_ = ws.SetWriteDeadline(time.Unix(1, 0))
	// A pong: harmless, were it ever sent.
	return ws.WriteMessage(websocket.PongMessage, nil) != nil
}

// allowControl spends one of the peer's control frames. Over the budget,
// the socket is closed with 1008; from then on the peer's control frames
// are ignored until its close reply.
func (c *Conn) allowControl() bool {
	if c.fault != nil {
		return false
	}
	if c.control.allow(time.Now()) {
		return true
	}
	c.fail(ClosePolicy, "too many control frames", errTooManyControl)
	return false
}

// fail closes the socket for something the peer did; Read then discards
// what the peer sends until its close reply, and returns err.
func (c *Conn) fail(code int, reason string, err error) {
	c.fault = err
	c.Close(code, reason)
}

// extend renews the peer's keepalive deadline, unless the socket is
// closing: then the peer has CloseWait to answer, whatever it sends.
func (c *Conn) extend() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.shut {
		return nil
	}
	return c.nc.SetReadDeadline(time.Now().Add(2 * c.cfg.PingInterval))
}

// sendPing queues a keepalive ping, unless one still waits.
func (c *Conn) sendPing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.shut || c.finished {
		return
	}
	if !c.pinged {
		c.pinged = true
		c.appendLocked(pingFrame)
	}
	c.ping.Reset(c.cfg.PingInterval)
}

// pong answers a ping. A pong not yet handed to the writer is replaced
// rather than joined by another (RFC 6455 5.5.3 lets an endpoint answer
// only the latest ping), so a peer that pings and never reads holds at
// most one pong in the queue.
func (c *Conn) pong(data string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.shut {
		return
	}
	if c.pongs == nil {
		c.pongs = new([2][2 + maxControl]byte)
	}
	buf := &c.pongs[c.pongNext]
	n := copy(buf[2:], data)
	buf[0], buf[1] = finPong, byte(n) //nolint:gosec // n <= maxControl: buf holds no more
	if c.pongAt >= 0 {
		c.queue[c.pongAt] = buf[:2+n]
		return
	}
	c.pongAt = len(c.queue)
	c.appendLocked(buf[:2+n])
}

// Read returns the next message. Every message read renews the peer's
// keepalive deadline. A message over ReadLimit, a protocol error or a
// flood of control frames closes the socket (1009, 1002, 1008); Read then
// reads on until the peer answers the close or CloseWait passes, so that
// the close reaches it, and returns the error.
func (c *Conn) Read() ([]byte, error) {
	for c.readErr == nil {
		c.awaitData()
		_, r, err := c.ws.NextReader()
		if err != nil {
			c.readErr = c.readFailed(err)
			break
		}
		if c.fault != nil {
			// Discard; an error shows at the next NextReader.
			_, _ = io.Copy(io.Discard, r)
			continue
		}
		p, err := readMessage(r, c.cfg.ReadLimit)
		if errors.Is(err, errTooBig) {
			// gorilla discards the rest of the message at NextReader.
			c.fail(CloseTooBig, "message too big", websocket.ErrReadLimit)
			continue
		}
		if err != nil {
			c.readErr = c.readFailed(err)
			break
		}
		if err := c.extend(); err != nil {
			c.readErr = err
			break
		}
		return p, nil
	}
	return nil, c.readErr
}

// readMessage reads r to its end, or fails with errTooBig as soon as it
// holds more than limit bytes.
func readMessage(r io.Reader, limit int64) ([]byte, error) {
	p := make([]byte, 0, min(512, limit+1))
	for {
		if len(p) == cap(p) {
			p = append(p, 0)[:len(p)]
		}
		n, err := r.Read(p[len(p):min(int64(cap(p)), limit+1)])
		p = p[:len(p)+n]
		switch {
		case int64(len(p)) > limit:
			return nil, errTooBig
		case errors.Is(err, io.EOF):
			return p, nil
		case err != nil:
			return nil, err
		}
	}
}

// readFailed decides what the peer is told when reading fails, and
// returns the error Read reports from now on.
func (c *Conn) readFailed(err error) error {
	if c.fault != nil {
		return c.fault
	}
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		// The peer closed, went away or fell silent: nothing to tell it.
	case !c.muted:
		// gorilla has sent its close: nothing more may follow.
		c.shutdown()
	case errors.Is(err, websocket.ErrReadLimit):
		// A frame whose length does not fit in 63 bits.
		c.Close(CloseTooBig, "message too big")
	default:
		// gorilla found a protocol error and told the peer nothing.
		c.Close(CloseProtocol, strings.TrimPrefix(err.Error(), "websocket: "))
	}
	return err
}

// Send queues a ready-made frame (see Frame) without blocking. When the
// queue is full the socket is closed with 1008: a client that cannot keep
// up is dropped rather than allowed to slow the others.
func (c *Conn) Send(frame []byte) {
	c.enqueue(frame)
}

// SendText frames payload and queues it.
func (c *Conn) SendText(payload []byte) {
	c.enqueue(Frame(payload))
}

// enqueue adds a data frame to the queue and starts the writer if it is
// idle.
func (c *Conn) enqueue(frame []byte) {
	c.mu.Lock()
	if c.closing || c.shut {
		c.mu.Unlock()
		return
	}
	if len(c.queue) >= c.cfg.MaxQueue || c.queued > 0 && c.queued+len(frame) > c.cfg.MaxQueueBytes {
		// Drop what has not been handed to the writer yet; the close
		// frame goes out next.
		c.dropQueuedLocked()
		c.closeLocked(ClosePolicy, "send queue full")
		c.mu.Unlock()
		c.cfg.OnSlow()
		return
	}
	c.queued += len(frame)
	c.appendLocked(frame)
	c.mu.Unlock()
}

func (c *Conn) appendLocked(frame []byte) {
	c.queue = append(c.queue, frame)
	c.peak = max(c.peak, len(c.queue))
	if !c.writing {
		c.writing = true
		if c.raw != nil {
			c.flushers.push(c)
		} else {
			go c.write(nil, 0)
		}
	}
}

func (c *Conn) dropQueuedLocked() {
	clear(c.queue)
	c.queue = c.queue[:0]
	c.queued, c.pongAt, c.pinged = 0, -1, false
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
	c.appendLocked(closeFrame(code, reason))
	// Whatever the peer does, the connection ends.
	c.backstop = time.AfterFunc(c.cfg.CloseWait+c.cfg.WriteTimeout, c.shutdown)
}

// write sends c's queue with blocking writes, under the write timeout,
// until it is empty, all queued frames in one system call per round, then
// exits: an idle socket has no writer. It starts with the rest of batch
// after its first done bytes, when a flusher found the peer's buffer full.
func (c *Conn) write(batch [][]byte, done int) {
	if batch != nil {
		c.writeWait(batch, skip(batch, done))
		if c.raw != nil && !c.more() {
			// The socket is idle: its next frames go to the flushers.
			return
		}
	}
	for {
		batch, ok := c.take()
		if !ok {
			return
		}
		c.writeWait(batch, batch)
	}
}

// writeWait writes rest, the unwritten end of batch, waiting as long as
// the write timeout allows.
func (c *Conn) writeWait(batch, rest [][]byte) {
	bufs := net.Buffers(rest)
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	_, err := bufs.WriteTo(c.nc)
	if c.raw != nil {
		// The flushers' writes take no deadline.
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	c.wrote(batch, err)
}

// take hands the writer what is queued, or, when nothing is (or the
// connection is closed), ends its turn: the writer stops, closes the
// connection if the reader is done, or waits for the peer's close reply.
func (c *Conn) take() ([][]byte, bool) {
	c.mu.Lock()
	if len(c.queue) == 0 || c.shut {
		c.idleLocked()
		return nil, false
	}
	batch := c.queue
	c.queue, c.spare = c.spare[:0], nil
	c.queued = 0
	if c.pongAt >= 0 {
		// The pending pong is in this batch: the next is built in
		// the other buffer while this one is written.
		c.pongAt, c.pongNext = -1, 1-c.pongNext
	}
	c.pinged = false
	c.mu.Unlock()
	return batch, true
}

// more reports whether c has frames queued; when it has none, it ends the
// writer's turn as take does.
func (c *Conn) more() bool {
	c.mu.Lock()
	if len(c.queue) == 0 || c.shut {
		c.idleLocked()
		return false
	}
	c.mu.Unlock()
	return true
}

// idleLocked ends the writer's turn; it unlocks c.mu.
func (c *Conn) idleLocked() {
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
}

// wrote finishes a written batch: it is counted, its array kept for the
// next batch, and a failed write closes the connection.
func (c *Conn) wrote(batch [][]byte, err error) {
	c.cfg.OnWritten(len(batch))
	clear(batch)
	c.mu.Lock()
	if cap(batch) <= 64 && !c.shut {
		c.spare = batch[:0]
	}
	c.mu.Unlock()
	if err != nil {
		c.shutdown()
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
	c.dropQueuedLocked()
	c.queue, c.spare = nil, nil
	c.ping.Stop()
	if c.backstop != nil {
		// A pending timer would keep the connection for its duration.
		c.backstop.Stop()
	}
	c.mu.Unlock()
	_ = c.nc.Close()
}

// bucket is a token bucket: rate tokens a second, at most burst at once.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate float64, burst int, now time.Time) bucket {
	return bucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes a token if there is one.
func (b *bucket) allow(now time.Time) bool {
	if now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
