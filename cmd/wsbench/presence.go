package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// presenceConfig is what a presence run does.
type presenceConfig struct {
	Sockets  int           `report:"sockets"`
	Sessions int           `report:"sessions"`
	Queries  int           `report:"queries"`
	Queriers int           `report:"queriers"`
	Settle   time.Duration `report:"settle_s"`
	Timeout  time.Duration `report:"timeout_s"`
}

// MarshalJSON writes the config with durations in seconds.
func (c presenceConfig) MarshalJSON() ([]byte, error) { return configJSON(c) }

var presenceCommand = command[presenceConfig, *presenceReport]{
	name: "presence",
	about: "K sockets over S sessions, then Q presence queries from C sockets. A reply is exact\n" +
		"when count == sockets connected on the session and len(connections) == count.",
	common: addCommonFlags,
	flags: func(fs *flag.FlagSet, cfg *presenceConfig) {
		fs.IntVar(&cfg.Sockets, "sockets", 100, "sockets `K`")
		fs.IntVar(&cfg.Sessions, "sessions", 1, "sessions `S`; socket i joins session i mod S")
		fs.IntVar(&cfg.Queries, "queries", 1000, "presence queries `Q` in total")
		fs.IntVar(&cfg.Queriers, "queriers", 4, "querying sockets `C` (sockets 0..C-1, so spread over sessions), one query in flight each")
		fs.DurationVar(&cfg.Settle, "settle", time.Second, "wait after connecting before querying (presence of the last hellos may lag)")
		fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "a query unanswered this long fails and stops its socket's queries")
	},
	check: func(_ *flag.FlagSet, cfg *presenceConfig) error {
		switch {
		case cfg.Sockets < 1:
			return errors.New("-sockets must be at least 1")
		case cfg.Sessions < 1 || cfg.Sessions > cfg.Sockets:
			return errors.New("-sessions must be between 1 and -sockets")
		case cfg.Queriers < 1 || cfg.Queriers > cfg.Sockets:
			return errors.New("-queriers must be between 1 and -sockets")
		case cfg.Queries < 0:
			return errors.New("-queries must not be negative")
		case cfg.Settle < 0 || cfg.Timeout <= 0:
			return errors.New("-settle must not be negative and -timeout must be positive")
		}
		return nil
	},
	run: presence,
}

// presenceReply is what a querier needs from a presence message.
type presenceReply struct {
	count       int64
	connections int
	valid       bool // both count and connections were present
	at          time.Time
}

// presenceSocket passes presence replies to its querier; sockets that do
// not query have no channel.
type presenceSocket struct {
	replies    chan presenceReply
	unexpected int64 // read after the reader has stopped
}

func (s *presenceSocket) message(m *message, now time.Time) {
	if m.kind != kindPresence || s.replies == nil {
		if m.kind != kindError {
			s.unexpected++
		}
		return
	}
	select {
	case s.replies <- presenceReply{m.count, m.connections, m.has&(hasCount|hasConnections) == hasCount|hasConnections, now}:
	default:
		s.unexpected++ // a reply nobody asked for
	}
}

// presenceReport is the result of a presence run.
type presenceReport struct {
	runHead[presenceConfig]
	Queries  queryReport    `json:"queries"`
	Latency  latencySummary `json:"latency"`
	Dropped  int            `json:"sockets_dropped"`
	Messages int64          `json:"unexpected_messages"`
	runTail
}

type queryReport struct {
	Sent      int64   `json:"sent"`
	Answered  int64   `json:"answered"`
	Timeouts  int64   `json:"timeouts"`
	Exact     int64   `json:"exact"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"per_second"`
	// CountMismatch: count != sockets connected on the session.
	CountMismatch int64 `json:"count_mismatches"`
	// LengthMismatch: len(connections) != count (or either missing).
	LengthMismatch int64      `json:"length_mismatches"`
	Examples       []mismatch `json:"mismatch_examples,omitempty"`
}

type mismatch struct {
	Session     string `json:"session"`
	Expected    int    `json:"expected"`
	Count       int64  `json:"count"`
	Connections int    `json:"connections"`
}

const maxExamples = 5

func presence(ctx context.Context, t *target, cfg presenceConfig, log logger) (*presenceReport, error) {
	b, err := startBench(t, cfg.Sockets, log)
	if err != nil {
		return nil, err
	}
	errs := b.errs
	log.printf("presence: connecting %d sockets over %d sessions to %s", cfg.Sockets, cfg.Sessions, urlList(t))
	sockets := make([]*presenceSocket, cfg.Sockets)
	conn := b.sessions(ctx, cfg.Sockets, socketPlan{
		sessions: cfg.Sessions,
		handler: func(c *client) handler {
			s := &presenceSocket{}
			if c.idx < cfg.Queriers {
				s.replies = make(chan presenceReply, 1)
			}
			sockets[c.idx] = s
			return s
		},
	})
	log.printf("connected %d, failed %d in %.2fs", conn.ok, conn.failed, conn.elapsed.Seconds())

	var queries queryReport
	latencies := make([]int32, cfg.Queries)
	answered := make([]bool, cfg.Queries)
	if sleepUntil(ctx, time.Now().Add(cfg.Settle)) {
		expected := aliveBySession(conn.clients, cfg.Sessions)
		log.printf("querying: %d queries from %d sockets", cfg.Queries, cfg.Queriers)
		q := &querying{cfg: cfg, t: t, expected: expected, latencies: latencies, answered: answered, errs: errs}
		start := time.Now()
		var wg sync.WaitGroup
		for i := range cfg.Queriers {
			if c := conn.clients[i]; c != nil {
				wg.Go(func() { q.run(ctx, c, sockets[i].replies) })
			}
		}
		wg.Wait()
		elapsed := time.Since(start)
		q.mu.Lock()
		queries = q.rep
		q.mu.Unlock()
		queries.Seconds = elapsed.Seconds()
		queries.PerSecond = rate(queries.Answered, elapsed)
	}

	dropped := b.dropped()
	b.finish(conn.clients)

	rep := &presenceReport{
		runHead: newHead(ctx, b, "presence", cfg),
		Queries: queries,
		Dropped: dropped,
	}

	lat := latencies[:0]
	for k, ok := range answered {
		if ok {
			lat = append(lat, latencies[k])
		}
	}
	rep.Latency = summarize(lat)
	for _, s := range sockets {
		if s != nil {
			rep.Messages += s.unexpected
		}
	}
	rep.runTail = b.tail()
	return rep, nil
}

// querying is the shared state of the querying sockets.
type querying struct {
	cfg       presenceConfig
	t         *target
	expected  []int // sockets connected per session when querying began
	next      atomic.Int64
	latencies []int32 // by query number; each written by one querier
	answered  []bool
	errs      *tally

	mu  sync.Mutex
	rep queryReport
}

// run sends queries from c, one at a time, until all Q are taken, a query
// times out or ctx ends.
func (q *querying) run(ctx context.Context, c *client, replies <-chan presenceReply) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	session := q.t.prefix + strconv.Itoa(c.session)
	msg := []byte(presenceMsg)
	for ctx.Err() == nil {
		k := q.next.Add(1) - 1
		if k >= int64(q.cfg.Queries) {
			return
		}
		start := time.Now()
		q.count(func(r *queryReport) { r.Sent++ })
		if err := c.write(msg); err != nil {
			q.errs.add("query: " + errKind(err))
			return
		}
		timer.Reset(q.cfg.Timeout)
		select {
		case r := <-replies:
			q.latencies[k] = micros(r.at.Sub(start))
			q.answered[k] = true
			want := q.expected[c.session]
			q.count(func(rep *queryReport) {
				rep.Answered++
				bad := false
				if r.count != int64(want) {
					rep.CountMismatch++
					bad = true
				}
				if !r.valid || int64(r.connections) != r.count {
					rep.LengthMismatch++
					bad = true
				}
				if !bad {
					rep.Exact++
				} else if len(rep.Examples) < maxExamples {
					rep.Examples = append(rep.Examples, mismatch{session, want, r.count, r.connections})
				}
			})
		case <-timer.C:
			q.count(func(r *queryReport) { r.Timeouts++ })
			q.errs.add("query: no presence reply within -timeout")
			return
		case <-ctx.Done():
			return
		}
	}
}

func (q *querying) count(f func(r *queryReport)) {
	q.mu.Lock()
	f(&q.rep)
	q.mu.Unlock()
}

func (r *presenceReport) print(w io.Writer) error {
	p := &printer{w: w}
	c := r.Config
	p.line("presence", "%d sockets, %d sessions, %d queries from %d sockets%s",
		c.Sockets, c.Sessions, c.Queries, c.Queriers, interrupted(r.Interrupted))
	p.line("servers", "%s", joinComma(r.URLs))
	p.connect(r.Connect, "dial + hello")
	q := r.Queries
	p.line("queries", "%d sent, %d answered, %d timed out in %.2fs (%.1f/s)", q.Sent, q.Answered, q.Timeouts, q.Seconds, q.PerSecond)
	p.line("exactness", "%d exact, %d count != sockets on session, %d len(connections) != count",
		q.Exact, q.CountMismatch, q.LengthMismatch)
	for _, m := range q.Examples {
		p.line("", "session %s: expected %d, count %d, len(connections) %d", m.Session, m.Expected, m.Count, m.Connections)
	}
	p.latency("latency", r.Latency, "")
	p.line("sockets", "%d dropped by the server during the run, %d unexpected messages", r.Dropped, r.Messages)
	p.tail(r.runTail, "")
	return p.err
}
