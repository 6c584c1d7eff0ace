package faults

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// collector keeps every message of a client as it comes, so that a test
// can look at a socket's whole stream while it flows.
type collector struct {
	name string
	c    *client

	mu   sync.Mutex
	msgs []map[string]any
	kick chan struct{}
}

// collect reads c's messages until its connection ends. Read c only
// through the collector from now on.
func collect(name string, c *client) *collector {
	col := &collector{name: name, c: c, kick: make(chan struct{}, 1)}
	go func() {
		for {
			select {
			case m := <-c.Msgs:
				col.mu.Lock()
				col.msgs = append(col.msgs, m)
				col.mu.Unlock()
				select {
				case col.kick <- struct{}{}:
				default:
				}
			case <-c.Done:
				return
			}
		}
	}()
	return col
}

// all returns the messages so far.
func (col *collector) all() []map[string]any {
	col.mu.Lock()
	defer col.mu.Unlock()
	return append([]map[string]any(nil), col.msgs...)
}

// waitFor returns once ok holds for the messages so far, failing the test
// when it does not within wait.
func (col *collector) waitFor(t *testing.T, what string, ok func(msgs []map[string]any) bool) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for !ok(col.all()) {
		select {
		case <-col.kick:
		case <-col.c.Done:
			if ok(col.all()) {
				return
			}
			t.Fatalf("%s: the connection ended before: %s", col.name, what)
		case <-deadline.C:
			t.Fatalf("%s: never: %s", col.name, what)
		}
	}
}

// seq is a broadcast of this package's senders: "<sender>-<n>", or
// "<sender>-end" (n = -1) for the last.
type seq struct {
	sender string
	n      int
}

func parseSeq(msg any) (seq, bool) {
	s, ok := msg.(string)
	if !ok {
		return seq{}, false
	}
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return seq{}, false
	}
	if s[i+1:] == "end" {
		return seq{s[:i], -1}, true
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return seq{}, false
	}
	return seq{s[:i], n}, true
}

// received is what one client got: per sender, the numbers of its
// broadcasts in the order they came; and the codes of the errors.
type received struct {
	from   map[string][]int
	errors []string
	other  []map[string]any // anything else
}

func receivedBy(msgs []map[string]any) received {
	r := received{from: map[string][]int{}}
	for _, m := range msgs {
		switch m["type"] {
		case "session_message":
			if s, ok := parseSeq(m["msg"]); ok {
				r.from[s.sender] = append(r.from[s.sender], s.n)
				continue
			}
		case "error":
			code, _ := m["code"].(string)
			r.errors = append(r.errors, code)
			continue
		}
		r.other = append(r.other, m)
	}
	return r
}

// has reports whether n of sender came.
func (r received) has(sender string, n int) bool {
	for _, x := range r.from[sender] {
		if x == n {
			return true
		}
	}
	return false
}

// sender broadcasts "<name>-<n>" on its socket, n = 0, 1, 2…, every
// interval until stopped.
type sender struct {
	name string
	c    *client
	sent atomic.Int64 // how many were written

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
	err      error // a failed write, read after done
}

func startSender(name string, c *client, interval time.Duration) *sender {
	s := &sender{name: name, c: c, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			msg := fmt.Sprintf(`{"type":"broadcast","msg":"%s-%d"}`, s.name, s.sent.Load())
			if err := s.c.Conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				s.err = err
				return
			}
			s.sent.Add(1)
		}
	}()
	return s
}

// finish stops the sender and sends its last broadcast, "<name>-end". It
// returns how many numbered broadcasts were sent.
func (s *sender) finish(t *testing.T) int {
	t.Helper()
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	if s.err != nil {
		t.Fatalf("sender %s: %v", s.name, s.err)
	}
	s.c.send(fmt.Sprintf(`{"type":"broadcast","msg":"%s-end"}`, s.name))
	return int(s.sent.Load())
}

// halt stops the sender without a last broadcast (for cleanups).
func (s *sender) halt() {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
}

// waitSent returns once the sender has sent at least n broadcasts.
func (s *sender) waitSent(t *testing.T, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s sent %d", s.name, n), func() bool { return int(s.sent.Load()) >= n })
}

// duplicates returns the numbers that came more than once.
func duplicates(ns []int) []int {
	seen := map[int]int{}
	var dup []int
	for _, n := range ns {
		seen[n]++
		if seen[n] == 2 {
			dup = append(dup, n)
		}
	}
	return dup
}

// increasing reports whether ns only grows (the end marker, -1, last).
func increasing(ns []int) bool {
	last := -2
	for i, n := range ns {
		if n == -1 {
			return i == len(ns)-1
		}
		if n <= last {
			return false
		}
		last = n
	}
	return true
}

// set returns the numbers of ns as a set.
func set(ns []int) map[int]bool {
	s := map[int]bool{}
	for _, n := range ns {
		s[n] = true
	}
	return s
}
