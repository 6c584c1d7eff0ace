package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
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

// socketPlan says where the sockets of a run connect: socket i joins
// session i mod sessions (see serverOf for the server).
type socketPlan struct {
	sessions int
	handler  func(c *client) handler // state for socket i, made before dialing
}

// serverOf is the server (index into the URLs) of socket i: the k-th socket
// of session s (s = i mod sessions, k = i div sessions) goes to server
// (s + k) mod servers. Sockets are spread evenly, every session with several
// sockets has subscribers on every server (so broadcasts must cross
// instances), and the sessions' first sockets (the fanout publishers)
// alternate between servers. With one session per socket it is plain
// round-robin.
func serverOf(i, sessions, servers int) int {
	return (i%sessions + i/sessions) % servers
}

// connectResult is the outcome of connecting all sockets of a run.
type connectResult struct {
	clients []*client // by socket number; nil when the socket failed
	ok      int
	failed  int
	elapsed time.Duration
	latency []int32 // dial + hello per connected socket, µs
}

// connectReport is the JSON and text form of a connectResult.
type connectReport struct {
	Sockets   int            `json:"sockets"`
	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	Seconds   float64        `json:"seconds"`
	PerSecond float64        `json:"per_second"`
	Latency   latencySummary `json:"latency"`
}

func (r *connectResult) report() connectReport {
	return connectReport{
		Sockets:   len(r.clients),
		Connected: r.ok,
		Failed:    r.failed,
		Seconds:   r.elapsed.Seconds(),
		PerSecond: rate(int64(r.ok), r.elapsed),
		Latency:   summarize(r.latency),
	}
}

// dialer returns the dialer of a run: small buffers (wsbench messages are
// about 100 bytes; larger ones are read in pieces) and a shared write buffer
// pool so that idle sockets hold no write buffer.
func (t *target) dialer() *websocket.Dialer {
	return &websocket.Dialer{
		NetDialContext:   (&net.Dialer{Timeout: t.handshakeTimeout}).DialContext,
		HandshakeTimeout: t.handshakeTimeout,
		ReadBufferSize:   1024,
		WriteBufferSize:  512,
		WriteBufferPool:  &sync.Pool{},
	}
}

// connectAll opens n sockets (dial, hello, hello done), at most
// t.connectConc at once and t.connectRate per second, spread over the
// servers by serverOf. Each connected socket has a running reader, tracked by
// readers. It stops early when ctx ends; sockets not tried are failed.
func connectAll(ctx context.Context, t *target, n int, plan socketPlan, errs *tally, readers *sync.WaitGroup, log logger) *connectResult {
	res := &connectResult{clients: make([]*client, n), latency: make([]int32, n)}
	dialer := t.dialer()
	var done atomic.Int64

	next := make(chan int)
	go func() {
		defer close(next)
		start := time.Now()
		for i := range n {
			if t.connectRate > 0 {
				at := start.Add(time.Duration(float64(i) / t.connectRate * float64(time.Second)))
				if !sleepUntil(ctx, at) {
					return
				}
			}
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	}()

	stopProgress := make(chan struct{})
	var progress sync.WaitGroup
	progress.Go(func() {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				log.printf("connecting: %d/%d", done.Load(), n)
			case <-stopProgress:
				return
			}
		}
	})

	start := time.Now()
	var workers sync.WaitGroup
	for range min(t.connectConc, n) {
		workers.Go(func() {
			for i := range next {
				began := time.Now()
				c, err := connectOne(ctx, t, dialer, i, plan, errs, readers)
				if err == nil {
					res.clients[i] = c
					res.latency[i] = micros(time.Since(began))
				}
				done.Add(1)
			}
		})
	}
	workers.Wait()
	res.elapsed = time.Since(start)
	close(stopProgress)
	progress.Wait()

	lat := res.latency[:0]
	for i, c := range res.clients {
		if c != nil {
			lat = append(lat, res.latency[i])
			res.ok++
		}
	}
	res.latency = lat
	res.failed = n - res.ok
	if res.failed > 0 && ctx.Err() != nil {
		errs.add("connect: not tried (interrupted)")
	}
	return res
}

// connectOne dials socket i, sends hello and waits until hello is done.
func connectOne(ctx context.Context, t *target, dialer *websocket.Dialer, i int, plan socketPlan, errs *tally, readers *sync.WaitGroup) (*client, error) {
	c := &client{
		idx:       i,
		server:    serverOf(i, plan.sessions, len(t.urls)),
		session:   i % plan.sessions,
		buf:       make([]byte, 0, 512),
		helloDone: make(chan struct{}),
	}
	c.h = plan.handler(c)
	u := t.sessionURL(c.server, t.prefix+strconv.Itoa(c.session))
	conn, resp, err := dialer.DialContext(ctx, u, nil)
	if resp != nil {
		// The dialer has already read what it wants of the handshake
		// response; the status code stays readable after the close.
		_ = resp.Body.Close()
	}
	if err != nil {
		switch {
		case ctx.Err() != nil:
			errs.add("dial: interrupted")
		case resp != nil:
			errs.add(fmt.Sprintf("dial: http %d %s", resp.StatusCode, http.StatusText(resp.StatusCode)))
		default:
			errs.add("dial: " + errKind(err))
		}
		return nil, err
	}
	conn.SetReadLimit(readLimit)
	c.conn = conn
	if err := c.write([]byte(helloMsg)); err != nil {
		errs.add("hello: " + errKind(err))
		_ = conn.Close()
		return nil, err
	}
	c.alive.Store(true)
	readers.Go(func() { c.readLoop(errs) })
	if t.noHelloOK {
		return c, nil
	}
	timer := time.NewTimer(t.helloTimeout)
	defer timer.Stop()
	select {
	case <-c.helloDone:
		if c.helloErr != nil {
			// The reader has tallied the close or error message.
			c.close()
			return nil, c.helloErr
		}
		return c, nil
	case <-timer.C:
		errs.add("hello: no hello_ok or message within -hello-timeout (server without hello_ok? use -no-hello-ok)")
		c.close()
		return nil, errors.New("hello timeout")
	case <-ctx.Done():
		errs.add("hello: interrupted")
		c.close()
		return nil, ctx.Err()
	}
}

// closeAll closes every connected socket, conc at a time.
func closeAll(clients []*client, conc int) {
	next := make(chan *client)
	var wg sync.WaitGroup
	for range max(conc, 1) {
		wg.Go(func() {
			for c := range next {
				c.close()
			}
		})
	}
	for _, c := range clients {
		if c != nil {
			next <- c
		}
	}
	close(next)
	wg.Wait()
}

// aliveBySession counts the sockets still connected on each session.
func aliveBySession(clients []*client, sessions int) []int {
	n := make([]int, sessions)
	for _, c := range clients {
		if c != nil && c.alive.Load() {
			n[c.session]++
		}
	}
	return n
}

// sleepUntil waits until at or ctx's end and reports whether at was reached.
func sleepUntil(ctx context.Context, at time.Time) bool {
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
