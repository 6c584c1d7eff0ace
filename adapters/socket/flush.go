package socket

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// A broadcast to a large session queues one frame on thousands of sockets
// at once. Starting a writer goroutine for each of them costs more than
// the write itself, so sockets with something to write wait in the
// server's ready list instead, and a few flushers (one per CPU) write them
// in turn without blocking: each socket's queue in one writev. A flusher
// that finds a socket's kernel buffer full hands the socket to a goroutine
// of its own that waits, under the write timeout, as every write did
// before; the flushers never wait for a peer. When the flushers fall behind,
// a socket's frames pile up while it waits its turn and go out together,
// so the system calls per frame fall as the load rises.

// flusher is a server's ready list and its flushers.
type flusher struct {
	mu      sync.Mutex
	ready   []*Conn // sockets with frames queued, in the order they got them
	next    int     // ready[next] is the next to write
	running int     // flushers running; they exit when the list is empty
	max     int
}

func newFlusher() *flusher { return &flusher{max: runtime.GOMAXPROCS(0)} }

// push adds c, whose writing flag its caller has just set, to the ready
// list, and starts a flusher if fewer than max run.
func (f *flusher) push(c *Conn) {
	f.mu.Lock()
	f.ready = append(f.ready, c)
	start := f.running < f.max
	if start {
		f.running++
	}
	f.mu.Unlock()
	if start {
		go f.run()
	}
}

// pop takes the next ready socket, or ends the calling flusher when there
// is none.
func (f *flusher) pop() *Conn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.next == len(f.ready) {
		f.running--
		// Keep the list's array unless a burst grew it far.
		if cap(f.ready) > 1024 {
			f.ready = nil
		}
		f.ready, f.next = f.ready[:0], 0
		return nil
	}
	c := f.ready[f.next]
	f.ready[f.next] = nil
	f.next++
	return c
}

func (f *flusher) run() {
	w := newWriter()
	for c := f.pop(); c != nil; c = f.pop() {
		if c.flush(w) {
			f.push(c)
		}
	}
}

// flush writes what c has queued, without blocking, and reports whether
// c has more to write; then it goes to the back of the ready list.
func (c *Conn) flush(w *writer) bool {
	batch, ok := c.take()
	if !ok {
		return false
	}
	n, err := w.writeNow(c.raw, batch)
	switch {
	case err == nil && n == size(batch):
		c.wrote(batch, nil)
		return c.more()
	case err == nil || errors.Is(err, syscall.EAGAIN) || errors.Is(err, os.ErrDeadlineExceeded):
		// The peer's buffer is full (or a past write's deadline is set):
		// wait for it on a goroutine of c's own, which then writes on as
		// long as c has frames.
		go c.write(batch, n)
		return false
	default:
		c.wrote(batch, err)
		return c.more()
	}
}

// writer is a flusher's means of writing: the vector of its writev and the
// function it hands the socket, made once so that a write allocates
// nothing.
type writer struct {
	iov  []syscall.Iovec
	bufs [][]byte // what the call writes
	n    int      // and its result
	err  error
	call func(fd uintptr) bool
}

func newWriter() *writer {
	w := &writer{}
	w.call = func(fd uintptr) bool {
		w.n, w.err = writev(fd, w.bufs, &w.iov)
		return true // never wait here
	}
	return w
}

// writeNow writes as much of bufs to the socket as it takes without
// waiting, and returns how many bytes it wrote. A full socket buffer ends
// it with no error or with EAGAIN.
func (w *writer) writeNow(rc syscall.RawConn, bufs [][]byte) (int, error) {
	defer func() { w.bufs = nil }()
	total := 0
	for len(bufs) > 0 {
		w.bufs, w.n, w.err = bufs, 0, nil
		err := rc.Write(w.call)
		if err == nil {
			err = w.err
		}
		if err != nil {
			return total, err
		}
		n := w.n
		total += n
		want := 0
		for len(bufs) > 0 && n >= len(bufs[0]) {
			n -= len(bufs[0])
			want += len(bufs[0])
			bufs = bufs[1:]
		}
		if n > 0 || want == 0 {
			// A partial write: the kernel's buffer is full.
			return total, nil
		}
	}
	return total, nil
}

// size is the number of bytes of bufs.
func size(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// skip drops the first n bytes of bufs, in place.
func skip(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}

// rawConn returns what writeNow writes to: the socket of a plain TCP
// connection, or nil (TLS, say) when c writes on goroutines of its own.
func rawConn(nc net.Conn) syscall.RawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok || !canWritev {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	// mute left a deadline in the past on the connection; writeNow's
	// writes take no deadline.
	_ = tc.SetWriteDeadline(time.Time{})
	return rc
}
