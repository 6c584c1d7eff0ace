package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// connectResult is the outcome of connecting all sockets of a run.
type connectResult struct {
	clients []*client // by socket number; nil when the socket failed
	ok      int
	failed  int
	elapsed time.Duration
	latency []int32 // open time per connected socket, µs
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

// opener opens socket i of a run and starts its reader. It returns nil when
// the socket failed, having tallied why.
type opener func(ctx context.Context, i int) *client

// connectAll opens n sockets with open, at most t.connectConc at once and
// t.connectRate per second, printing progress every two seconds. It stops
// early when ctx ends; sockets not tried are failed. Every subcommand
// connects through it: session sockets with sessionOpener, chat slots with
// their own dial.
func connectAll(ctx context.Context, t *target, n int, open opener, errs *tally, log logger) *connectResult {
	res := &connectResult{clients: make([]*client, n), latency: make([]int32, n)}
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

	stopProgress := every(2*time.Second, func() { log.printf("connecting: %d/%d", done.Load(), n) })

	start := time.Now()
	var workers sync.WaitGroup
	for range min(t.connectConc, n) {
		workers.Go(func() {
			for i := range next {
				began := time.Now()
				if c := open(ctx, i); c != nil {
					res.clients[i] = c
					res.latency[i] = micros(time.Since(began))
				}
				done.Add(1)
			}
		})
	}
	workers.Wait()
	res.elapsed = time.Since(start)
	stopProgress()

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

// dial opens a WebSocket to u with the run's read limit, tallying why when
// it fails.
func dial(ctx context.Context, dialer *websocket.Dialer, u string, errs *tally) (*websocket.Conn, error) {
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
	return conn, nil
}

// socketPlan says where the sockets of a session run connect: socket i
// joins session i mod sessions (see serverOf for the server).
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

// sessionOpener opens session sockets as plan says: dial, hello, and wait
// until hello is done. Each connected socket has a running reader, tracked
// by readers.
func sessionOpener(t *target, plan socketPlan, errs *tally, readers *sync.WaitGroup) opener {
	dialer := t.dialer()
	return func(ctx context.Context, i int) *client {
		return openSession(ctx, t, dialer, i, plan, errs, readers)
	}
}

// openSession dials socket i, sends hello and waits until hello is done.
func openSession(ctx context.Context, t *target, dialer *websocket.Dialer, i int, plan socketPlan, errs *tally, readers *sync.WaitGroup) *client {
	c := &client{
		idx:       i,
		server:    serverOf(i, plan.sessions, len(t.urls)),
		session:   i % plan.sessions,
		buf:       make([]byte, 0, 512),
		helloDone: make(chan struct{}),
	}
	c.h = plan.handler(c)
	conn, err := dial(ctx, dialer, t.sessionURL(c.server, t.prefix+strconv.Itoa(c.session)), errs)
	if err != nil {
		return nil
	}
	c.conn = conn
	if err := c.write([]byte(helloMsg)); err != nil {
		errs.add("hello: " + errKind(err))
		_ = conn.Close()
		return nil
	}
	c.alive.Store(true)
	readers.Go(func() { c.readLoop(errs) })
	if t.noHelloOK {
		return c
	}
	timer := time.NewTimer(t.helloTimeout)
	defer timer.Stop()
	select {
	case <-c.helloDone:
		if c.helloErr != nil {
			// The reader has tallied the close or error message.
			c.close()
			return nil
		}
		return c
	case <-timer.C:
		errs.add("hello: no hello_ok or message within -hello-timeout (server without hello_ok? use -no-hello-ok)")
		c.close()
		return nil
	case <-ctx.Done():
		errs.add("hello: interrupted")
		c.close()
		return nil
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
