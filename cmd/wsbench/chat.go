package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// chatConfig is what a chat run does.
type chatConfig struct {
	Conns      int
	Chats      int // per connection; 0: until -duration
	Duration   time.Duration
	Message    string
	Channel    string
	Data       string // raw JSON; empty: no data field
	NewThread  bool
	Timeout    time.Duration
	ErrorPause time.Duration
	Stagger    time.Duration
	MaxSamples int
}

// MarshalJSON writes the config with durations in seconds.
func (c chatConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Conns      int     `json:"conns"`
		Chats      int     `json:"chats_per_conn"`
		Duration   float64 `json:"duration_s"`
		Message    string  `json:"message"`
		Channel    string  `json:"channel"`
		Data       string  `json:"data"`
		NewThread  bool    `json:"new_thread"`
		Timeout    float64 `json:"timeout_s"`
		ErrorPause float64 `json:"error_pause_s"`
		Stagger    float64 `json:"stagger_s"`
		MaxSamples int     `json:"max_samples"`
	}{c.Conns, c.Chats, c.Duration.Seconds(), c.Message, c.Channel, c.Data, c.NewThread,
		c.Timeout.Seconds(), c.ErrorPause.Seconds(), c.Stagger.Seconds(), c.MaxSamples})
}

var chatCommand = command[chatConfig, *chatReport]{
	name: "chat",
	about: "C connections to /ws/chat/, each sending chats back to back: -chats per connection or\n" +
		"for -duration. Measures, per chat: chat sent -> session_started, -> first token, every\n" +
		"gap between tokens, tokens, chat sent -> end; in all: tokens/s and chats/s delivered,\n" +
		"error events by code, close codes and escalations. A socket the server closes after an\n" +
		"escalation is opened again, so C chats stay in flight.",
	common: addChatFlags,
	flags: func(fs *flag.FlagSet, cfg *chatConfig) {
		fs.IntVar(&cfg.Conns, "conns", 20, "concurrent connections `C`, round-robin over -url; each has one chat in flight at a time")
		fs.IntVar(&cfg.Chats, "chats", 10, "chats `N` per connection, back to back (the next is sent as soon as end arrives); 0, or -duration without -chats: no limit")
		fs.DurationVar(&cfg.Duration, "duration", 0, "stop starting chats after this long (0: when -chats are done); chats in flight still finish")
		fs.StringVar(&cfg.Message, "message", "Hello, how can you help?", "the chat `text`, the same every time")
		fs.StringVar(&cfg.Channel, "channel", "web", "the chat's `channel`")
		fs.StringVar(&cfg.Data, "data", "[]", "the chat's data as raw `JSON` (empty: no data field; channel web requires one)")
		fs.BoolVar(&cfg.NewThread, "new-thread", false, "every chat on a new thread (<prefix><conn>-<n>); default: the connection's thread continues (the server names it at the first chat)")
		fs.DurationVar(&cfg.Stagger, "stagger", 0, "spread the connections' first chats evenly over this long, so that equal chats do not run in lockstep (0: all at once)")
		fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "a chat without end or error this long fails and stops its connection")
		fs.DurationVar(&cfg.ErrorPause, "error-pause", 20*time.Millisecond, "wait this long after a chat that got an error before the next one, so that refusals do not become a flood the rate limit refuses too (0: none)")
		fs.IntVar(&cfg.MaxSamples, "max-samples", 1_000_000, "samples kept per measure (4 bytes each, 5 measures); beyond, a uniform random sample is kept")
	},
	check: func(fs *flag.FlagSet, cfg *chatConfig) error {
		chatsSet := false
		fs.Visit(func(f *flag.Flag) { chatsSet = chatsSet || f.Name == "chats" })
		if cfg.Duration > 0 && !chatsSet {
			cfg.Chats = 0
		}
		return cfg.validate()
	},
	run: chat,
}

// addChatFlags registers the common flags that mean something to chat
// sockets, which send no hello and join no session.
func addChatFlags(fs *flag.FlagSet) *commonFlags {
	f := &commonFlags{helloTimeout: time.Second} // unused: validated only
	fs.StringVar(&f.urls, "url", "ws://127.0.0.1:8000", "server base `URLs`, comma-separated (loopback only); connections alternate between them")
	fs.StringVar(&f.key, "key", "", "API `key`, sent as ?authorization=")
	fs.StringVar(&f.prefix, "prefix", "", "thread id `prefix` of -new-thread (default: chat-<random>-, unique per run)")
	fs.StringVar(&f.pids, "pid", "", "server `PIDs`, comma-separated in -url order, to report VmRSS")
	fs.DurationVar(&f.handshakeTimeout, "handshake-timeout", 10*time.Second, "WebSocket handshake timeout")
	fs.IntVar(&f.connectConc, "connect-conc", 64, "connects in flight at once")
	fs.Float64Var(&f.connectRate, "connect-rate", 0, "connects started per second (0: no limit)")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as one JSON object (no progress lines)")
	fs.BoolVar(&f.quiet, "q", false, "no progress lines")
	return f
}

func (c *chatConfig) validate() error {
	switch {
	case c.Conns < 1:
		return errors.New("-conns must be at least 1")
	case c.Chats < 0 || c.Duration < 0:
		return errors.New("-chats and -duration must not be negative")
	case c.Chats == 0 && c.Duration == 0:
		return errors.New("give -chats or -duration: the run would never end")
	case c.Data != "" && !json.Valid([]byte(c.Data)):
		return errors.New("-data must be JSON")
	case c.Timeout <= 0:
		return errors.New("-timeout must be positive")
	case c.ErrorPause < 0:
		return errors.New("-error-pause must not be negative")
	case c.MaxSamples < 1:
		return errors.New("-max-samples must be at least 1")
	}
	return nil
}

// chatKind is the type of a chat server message, as far as wsbench cares.
type chatKind uint8

const (
	chatOther chatKind = iota
	chatStarted
	chatToken
	chatEscalation
	chatEnd
	chatError
)

// chatMsg holds the few fields wsbench reads from a chat server message.
// The slices alias the message and keep JSON escapes (see jsonString).
type chatMsg struct {
	kind     chatKind
	threadID []byte // session_started
	reason   []byte // escalation
	code     []byte // error
	text     []byte // error: its message
}

// tokenPrefix begins every token message of wsserver, which writes type
// first and without spaces. Tokens are nearly all the traffic, so they are
// recognised by it without scanning the content.
var tokenPrefix = []byte(`{"type":"token",`)

// parseChat reads a chat server message: tokens by their prefix, anything
// else (and tokens of servers that space or order their JSON differently)
// by one scan that decodes only type, thread_id, reason, code and message.
func parseChat(b []byte, m *chatMsg) error {
	*m = chatMsg{}
	if bytes.HasPrefix(b, tokenPrefix) {
		m.kind = chatToken
		return nil
	}
	s := scanner{b: b}
	if !s.consume('{') {
		return errors.New("message is not a JSON object")
	}
	if s.consume('}') {
		return s.end()
	}
	for {
		key, ok := s.str()
		if !ok || !s.consume(':') {
			return s.fail("key")
		}
		var dst *[]byte
		switch string(key) {
		case "type":
			v, ok := s.str()
			if !ok {
				return s.fail("type")
			}
			m.kind = chatKindOf(v)
		case "thread_id":
			dst = &m.threadID
		case "reason":
			dst = &m.reason
		case "code":
			dst = &m.code
		case "message":
			dst = &m.text
		default:
			if !s.skip() {
				return s.fail(string(key))
			}
		}
		if dst != nil {
			if *dst, ok = s.strOrSkip(); !ok {
				return s.fail(string(key))
			}
		}
		if s.consume(',') {
			continue
		}
		if s.consume('}') {
			return s.end()
		}
		return s.fail("object")
	}
}

func chatKindOf(v []byte) chatKind {
	switch string(v) {
	case "token":
		return chatToken
	case "session_started":
		return chatStarted
	case "escalation":
		return chatEscalation
	case "end":
		return chatEnd
	case "error":
		return chatError
	}
	return chatOther
}

// chatErrorName is the tally key of an error event: its code, or its text
// when it has none.
func chatErrorName(m *chatMsg) string {
	if len(m.code) > 0 {
		return "error " + jsonString(m.code)
	}
	return "error " + strconv.Quote(truncate(jsonString(m.text), 60))
}

// reservoir keeps at most limit samples of a stream: every one until it is
// full, then each new one replaces a random kept one with probability
// limit/n, so what is kept is a uniform sample of all n (algorithm R).
// Memory stays bounded however long the run.
type reservoir struct {
	s     []int32
	limit int
	n     int64
}

func newReservoir(limit, prealloc int) reservoir {
	return reservoir{s: make([]int32, 0, min(limit, prealloc)), limit: limit}
}

func (r *reservoir) add(v int32) {
	r.n++
	if len(r.s) < r.limit {
		r.s = append(r.s, v)
		return
	}
	if j := rand.Int64N(r.n); j < int64(r.limit) {
		r.s[j] = v
	}
}

// chatRun is the shared state of a run, read-only once chatting begins
// but for the tallies, which lock.
type chatRun struct {
	cfg    chatConfig
	t      *target
	dialer *websocket.Dialer
	// head and tail are the chat message around the thread id of
	// -new-thread; without it head is the whole message.
	head, tail []byte
	// base is the clock of every time below (monotonic).
	base     time.Time
	deadline time.Duration // since base; 0: none
	// limit is each slot's samples per measure: the slots together keep
	// at most -max-samples. Slots see about as many events each, so their
	// samples are merged as they are.
	limit       int
	errs        *tally
	escalations *tally // by reason
}

func (r *chatRun) since() time.Duration { return time.Since(r.base) }

// chatSlot is one of the C connections of a run. After an escalation the
// server closes the socket; the slot then opens another on the same server
// and goes on, so C chats stay in flight.
type chatSlot struct {
	run    *chatRun
	idx    int
	server int
	conn   *chatConn // the sender's: nil after an escalation closed it
	buf    []byte    // the chat message, rebuilt per chat with -new-thread

	// Progress, polled while chatting.
	ended  atomic.Int64
	tokens atomic.Int64

	// Written by the sender; read after it has stopped.
	sent, timedOut, lost, abandoned, reconnects int64

	// Written by the readers of the slot's connections, one after the
	// other; read after the last has stopped.
	started, failed, escalated, escalationCloses, unexpected int64
	toStarted, toFirst, gaps, totals, perChat                reservoir
}

// chatConn is one socket of a slot. Its reader goroutine tells the sender
// when the chat in flight is over.
type chatConn struct {
	c *client
	// sent is when the chat in flight was sent (since base, ns); 0: no chat
	// in flight. The sender stores it before writing the chat, the reader
	// zeroes it before telling the sender the chat is over.
	sent   atomic.Int64
	expect []byte // the thread id sent with -new-thread; set before sent
	done   chan chatOutcome
	gone   chan struct{} // closed when the reader stops

	// Reader state.
	msg           chatMsg
	cur           chatState
	thread        []byte // the thread of the connection, without -new-thread
	haveThread    bool
	lastEscalated bool
}

// chatState is the reader's view of the chat in flight.
type chatState struct {
	inFlight  bool
	sent      time.Duration
	started   bool
	escalated bool
	tokens    int32
	last      time.Duration // the previous token
}

type chatOutcome struct{ escalated, failed bool }

// chatReport is the result of a chat run.
type chatReport struct {
	runHead[chatConfig]
	Chats     chatCounts     `json:"chats"`
	Tokens    tokenReport    `json:"tokens"`
	ToStarted latencySummary `json:"to_session_started"`
	ToFirst   latencySummary `json:"to_first_token"`
	Gap       latencySummary `json:"token_gap"`
	Total     latencySummary `json:"chat_total"`
	// Sampled is true when some measure kept a random sample of its events
	// rather than all of them (-max-samples).
	Sampled     bool           `json:"sampled"`
	Escalations map[string]int `json:"escalations"` // by reason
	Unexpected  int64          `json:"unexpected_messages"`
	runTail
	// CPUPerToken is wsbench's CPU time while chatting per token received.
	CPUPerToken float64 `json:"wsbench_cpu_per_token_us"`
}

type chatCounts struct {
	Sent    int64 `json:"sent"`
	Started int64 `json:"started"` // session_started received
	Ended   int64 `json:"ended"`   // end received
	// Escalated chats are ended ones with an escalation event.
	Escalated int64 `json:"escalated"`
	// Failed chats got an error event instead of (the rest of) an answer.
	Failed int64 `json:"failed"`
	// TimedOut chats got no end or error within -timeout.
	TimedOut int64 `json:"timed_out"`
	// Lost chats were in flight when the server closed the socket.
	Lost int64 `json:"lost"`
	// Abandoned chats were in flight when the run was interrupted.
	Abandoned int64 `json:"abandoned"`
	// EscalationCloses counts sockets closed 1000 "escalation" after an
	// escalated chat's end, as SPEC §1 says; Reconnects the sockets opened
	// again after them.
	EscalationCloses int64   `json:"escalation_closes"`
	Reconnects       int64   `json:"reconnects"`
	Seconds          float64 `json:"seconds"`
	PerSecond        float64 `json:"ended_per_second"`
}

type tokenReport struct {
	Received  int64        `json:"received"`
	PerSecond float64      `json:"per_second"`
	PerChat   countSummary `json:"per_chat"`
}

// countSummary is the distribution of a count per chat.
type countSummary struct {
	Samples int     `json:"samples"`
	Min     int32   `json:"min"`
	Mean    float64 `json:"mean"`
	P50     int32   `json:"p50"`
	P90     int32   `json:"p90"`
	P99     int32   `json:"p99"`
	Max     int32   `json:"max"`
}

func chat(ctx context.Context, t *target, cfg chatConfig, log logger) (*chatReport, error) {
	if len(t.prefix) > 100 {
		return nil, errors.New("-prefix: at most 100 characters (thread ids have at most 128)")
	}
	b, err := startBench(t, cfg.Conns, log)
	if err != nil {
		return nil, err
	}
	r := &chatRun{
		cfg:         cfg,
		t:           t,
		dialer:      t.dialer(),
		base:        time.Now(),
		limit:       max(1, cfg.MaxSamples/cfg.Conns),
		errs:        b.errs,
		escalations: &tally{},
	}
	r.head, r.tail = chatMessage(cfg)

	perChat := 256 // samples preallocated per slot and per-chat measure
	if cfg.Chats > 0 {
		perChat = cfg.Chats
	}
	slots := make([]*chatSlot, cfg.Conns)
	for i := range slots {
		slots[i] = &chatSlot{
			run:       r,
			idx:       i,
			server:    i % len(t.urls),
			buf:       make([]byte, 0, len(r.head)+len(r.tail)+len(t.prefix)+24),
			toStarted: newReservoir(r.limit, perChat),
			toFirst:   newReservoir(r.limit, perChat),
			totals:    newReservoir(r.limit, perChat),
			perChat:   newReservoir(r.limit, perChat),
			gaps:      newReservoir(r.limit, 4096),
		}
	}

	log.printf("chat: connecting %d sockets to %s", cfg.Conns, urlList(t))
	readers := &b.readers
	conn := b.connect(ctx, len(slots), func(ctx context.Context, i int) *client {
		if slots[i].dial(ctx, readers) {
			return slots[i].conn.c
		}
		return nil
	})
	log.printf("connected %d, failed %d in %.2fs", conn.ok, conn.failed, conn.elapsed.Seconds())

	var window, chatCPU time.Duration
	if ctx.Err() == nil && conn.ok > 0 {
		chatCPU = cpuOf(func() {
			start := r.since()
			if cfg.Duration > 0 {
				r.deadline = start + cfg.Duration
			}
			log.printf("chatting: %s", chatPlan(cfg))
			stop := every(2*time.Second, func() {
				var ended, tokens int64
				for _, s := range slots {
					ended += s.ended.Load()
					tokens += s.tokens.Load()
				}
				log.printf("chatting: %d chats ended, %d tokens (%.0f/s)", ended, tokens, rate(tokens, r.since()-start))
			})
			var senders sync.WaitGroup
			for _, s := range slots {
				if s.conn != nil {
					senders.Go(func() { s.chat(ctx, readers) })
				}
			}
			senders.Wait()
			window = r.since() - start
			stop()
		})
	}

	open := make([]*client, 0, len(slots))
	for _, s := range slots {
		if s.conn != nil {
			open = append(open, s.conn.c)
		}
	}
	b.finish(open)

	rep := &chatReport{runHead: newHead(ctx, b, "chat", cfg)}
	c := &rep.Chats
	var toStarted, toFirst, gaps, totals, perChatTokens []int32
	for _, s := range slots {
		c.Sent += s.sent
		c.Started += s.started
		c.Ended += s.ended.Load()
		c.Escalated += s.escalated
		c.Failed += s.failed
		c.TimedOut += s.timedOut
		c.Lost += s.lost
		c.Abandoned += s.abandoned
		c.EscalationCloses += s.escalationCloses
		c.Reconnects += s.reconnects
		rep.Tokens.Received += s.tokens.Load()
		rep.Unexpected += s.unexpected
		for _, m := range []*reservoir{&s.toStarted, &s.toFirst, &s.gaps, &s.totals, &s.perChat} {
			rep.Sampled = rep.Sampled || m.n > int64(len(m.s))
		}
		toStarted = append(toStarted, s.toStarted.s...)
		toFirst = append(toFirst, s.toFirst.s...)
		gaps = append(gaps, s.gaps.s...)
		totals = append(totals, s.totals.s...)
		perChatTokens = append(perChatTokens, s.perChat.s...)
	}
	c.Seconds = window.Seconds()
	c.PerSecond = rate(c.Ended, window)
	rep.Tokens.PerSecond = rate(rep.Tokens.Received, window)
	rep.Tokens.PerChat = countsOf(perChatTokens)
	rep.ToStarted = summarize(toStarted)
	rep.ToFirst = summarize(toFirst)
	rep.Gap = summarize(gaps)
	rep.Total = summarize(totals)
	rep.Escalations = r.escalations.snapshot()
	rep.runTail = b.tail()
	if rep.Tokens.Received > 0 {
		rep.CPUPerToken = math.Round(float64(chatCPU.Nanoseconds())/float64(rep.Tokens.Received)/100) / 10
	}
	return rep, nil
}

// chatMessage returns the chat message cfg sends, split around the thread
// id with -new-thread (else tail is empty).
func chatMessage(cfg chatConfig) (head, tail []byte) {
	text, _ := json.Marshal(cfg.Message) // a string always encodes
	channel, _ := json.Marshal(cfg.Channel)
	head = append([]byte(`{"type":"chat","message":`), text...)
	if cfg.NewThread {
		head = append(head, `,"thread_id":"`...)
		tail = []byte(`"`)
	}
	tail = append(append(tail, `,"channel":`...), channel...)
	if cfg.Data != "" {
		tail = append(append(tail, `,"data":`...), cfg.Data...)
	}
	tail = append(tail, '}')
	if !cfg.NewThread {
		return append(head, tail...), nil
	}
	return head, tail
}

func chatPlan(cfg chatConfig) string {
	s := ""
	switch {
	case cfg.Chats > 0 && cfg.Duration > 0:
		s = fmt.Sprintf("%d chats per connection, at most %s", cfg.Chats, cfg.Duration)
	case cfg.Chats > 0:
		s = fmt.Sprintf("%d chats per connection", cfg.Chats)
	default:
		s = fmt.Sprintf("for %s", cfg.Duration)
	}
	if cfg.NewThread {
		return s + ", each on a new thread"
	}
	return s + ", each connection continuing its thread"
}

func countsOf(samples []int32) countSummary {
	l := summarize(samples)
	return countSummary(l)
}

// dial opens a socket for the slot and starts its reader. It reports
// failures in the error tally.
func (s *chatSlot) dial(ctx context.Context, readers *sync.WaitGroup) bool {
	r := s.run
	conn, err := dial(ctx, r.dialer, r.t.chatURL(s.server), r.errs)
	if err != nil {
		return false
	}
	c := &client{idx: s.idx, server: s.server, conn: conn, buf: make([]byte, 0, 512)}
	c.alive.Store(true)
	cc := &chatConn{c: c, done: make(chan chatOutcome, 1), gone: make(chan struct{})}
	s.conn = cc
	readers.Go(func() { s.read(cc) })
	return true
}

// staggerDelay is how long connection idx of conns waits before its first
// chat, so that the first chats spread evenly over stagger: 0, stagger/conns,
// 2·stagger/conns, ... (always less than stagger).
func staggerDelay(stagger time.Duration, idx, conns int) time.Duration {
	if stagger <= 0 || conns <= 1 || idx <= 0 {
		return 0
	}
	return stagger * time.Duration(idx%conns) / time.Duration(conns)
}

// chat sends the slot's chats back to back until -chats are sent,
// -duration has passed, the run is interrupted or the slot's socket fails.
func (s *chatSlot) chat(ctx context.Context, readers *sync.WaitGroup) {
	r := s.run
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	if d := staggerDelay(r.cfg.Stagger, s.idx, r.cfg.Conns); d > 0 {
		timer.Reset(d)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
	for n := 0; ; n++ {
		if r.cfg.Chats > 0 && n >= r.cfg.Chats || r.deadline > 0 && r.since() >= r.deadline || ctx.Err() != nil {
			return
		}
		if s.conn == nil {
			if !s.dial(ctx, readers) {
				return
			}
			s.reconnects++
		}
		cc := s.conn
		select {
		case <-cc.gone:
			return // closed after a chat ended; the reader has counted why
		default:
		}
		msg := s.message(cc, n)
		cc.sent.Store(max(int64(r.since()), 1))
		if err := cc.c.write(msg); err != nil {
			r.errs.add("send: " + errKind(err))
			return
		}
		s.sent++
		timer.Reset(r.cfg.Timeout)
		var o chatOutcome
		select {
		case o = <-cc.done:
		case <-cc.gone:
			// The reader tells the outcome before it stops.
			select {
			case o = <-cc.done:
			default:
				s.lost++
				return
			}
		case <-timer.C:
			s.timedOut++
			r.errs.add("chat: no end or error within -timeout")
			cc.c.close()
			<-cc.gone
			return
		case <-ctx.Done():
			s.abandoned++
			return
		}
		if o.failed && r.cfg.ErrorPause > 0 && !sleepUntil(ctx, time.Now().Add(r.cfg.ErrorPause)) {
			return
		}
		if !o.escalated {
			continue
		}
		// The server closes the socket after an escalation: chat on a new one.
		timer.Reset(r.cfg.Timeout)
		select {
		case <-cc.gone:
		case <-timer.C:
			r.errs.add("escalation: socket not closed within -timeout after end")
			cc.c.close()
			<-cc.gone
		case <-ctx.Done():
			return
		}
		s.conn = nil
	}
}

// message returns the n-th chat of the slot.
func (s *chatSlot) message(cc *chatConn, n int) []byte {
	r := s.run
	if !r.cfg.NewThread {
		return r.head
	}
	b := append(s.buf[:0], r.head...)
	at := len(b)
	b = append(b, r.t.prefix...)
	b = strconv.AppendInt(b, int64(s.idx), 10)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(n), 10)
	cc.expect = b[at:len(b):len(b)]
	b = append(b, r.tail...)
	s.buf = b
	return b
}

// read reads the socket's messages until it fails or is closed.
func (s *chatSlot) read(cc *chatConn) {
	defer close(cc.gone)
	r := s.run
	for {
		b, err := cc.c.read()
		if err != nil {
			cc.c.alive.Store(false)
			if !cc.c.closing.Load() {
				s.readFailed(cc, err)
			}
			return
		}
		now := r.since()
		if err := parseChat(b, &cc.msg); err != nil {
			r.errs.add("unparsable message")
			continue
		}
		s.event(cc, &cc.msg, now)
	}
}

// event follows the chat in flight through one message (SPEC §1 order:
// session_started, tokens, escalation, end; or an error).
func (s *chatSlot) event(cc *chatConn, m *chatMsg, now time.Duration) {
	r := s.run
	if m.kind == chatOther {
		s.unexpected++
		return
	}
	ch := &cc.cur
	if !ch.inFlight {
		sent := cc.sent.Load()
		if sent == 0 {
			if m.kind == chatError {
				r.errs.add(chatErrorName(m) + " (no chat in flight)")
			} else {
				r.errs.add("protocol: message with no chat in flight")
			}
			return
		}
		*ch = chatState{inFlight: true, sent: time.Duration(sent)}
	}
	switch m.kind {
	case chatToken:
		if !ch.started {
			r.errs.add("protocol: token before session_started")
		}
		ch.tokens++
		s.tokens.Add(1)
		if ch.tokens == 1 {
			s.toFirst.add(micros(now - ch.sent))
		} else {
			s.gaps.add(micros(now - ch.last))
		}
		ch.last = now
	case chatStarted:
		if ch.started {
			r.errs.add("protocol: session_started twice")
			return
		}
		ch.started = true
		s.started++
		s.toStarted.add(micros(now - ch.sent))
		s.checkThread(cc, m.threadID)
	case chatEscalation:
		ch.escalated = true
		r.escalations.add(jsonString(m.reason))
	case chatEnd:
		if !ch.started {
			r.errs.add("protocol: end before session_started")
		}
		s.totals.add(micros(now - ch.sent))
		s.perChat.add(ch.tokens)
		if ch.escalated {
			s.escalated++
		}
		s.ended.Add(1)
		s.finish(cc, chatOutcome{escalated: ch.escalated})
	case chatError:
		r.errs.add(chatErrorName(m))
		s.failed++
		s.finish(cc, chatOutcome{failed: true})
	}
}

// checkThread checks session_started's thread: the one sent with
// -new-thread, else the same on every chat of a connection.
func (s *chatSlot) checkThread(cc *chatConn, id []byte) {
	r := s.run
	switch {
	case len(id) == 0:
		r.errs.add("session_started: no thread_id")
	case r.cfg.NewThread:
		if !bytes.Equal(id, cc.expect) {
			r.errs.add("session_started: not the thread_id sent")
		}
	case !cc.haveThread:
		cc.thread = append(cc.thread[:0], id...)
		cc.haveThread = true
	case !bytes.Equal(id, cc.thread):
		r.errs.add("session_started: thread_id changed on the connection")
	}
}

// finish ends the chat in flight and tells the sender.
func (s *chatSlot) finish(cc *chatConn, o chatOutcome) {
	cc.cur = chatState{}
	cc.lastEscalated = o.escalated
	cc.sent.Store(0)
	select {
	case cc.done <- o:
	default: // unreachable: one chat in flight, one outcome
	}
}

// readFailed tallies why the socket ended, unless it is the close that
// follows an escalation.
func (s *chatSlot) readFailed(cc *chatConn, err error) {
	var ce *websocket.CloseError
	if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure && ce.Text == "escalation" &&
		cc.lastEscalated && !cc.cur.inFlight {
		s.escalationCloses++
		return
	}
	key := "read: " + errKind(err)
	if ce != nil && ce.Text != "" {
		key += " " + strconv.Quote(truncate(ce.Text, 40))
	}
	s.run.errs.add(key)
}

func (r *chatReport) print(w io.Writer) error {
	p := &printer{w: w}
	cfg := r.Config
	p.line("chat", "%d connections, %s; message %d chars, channel %s%s",
		cfg.Conns, chatPlan(cfg), len([]rune(cfg.Message)), cfg.Channel, interrupted(r.Interrupted))
	p.line("servers", "%s", joinComma(r.URLs))
	p.connect(r.Connect, "dial")
	c := r.Chats
	p.line("chats", "%d sent, %d started, %d ended (%d escalated) in %.2fs (%.1f/s)",
		c.Sent, c.Started, c.Ended, c.Escalated, c.Seconds, c.PerSecond)
	p.line("", "%d failed (error event), %d timed out, %d lost (socket closed), %d abandoned (interrupted)",
		c.Failed, c.TimedOut, c.Lost, c.Abandoned)
	tk := r.Tokens
	pc := tk.PerChat
	p.line("tokens", "%d received, %.1f/s; per ended chat: mean %.1f  p50 %d  p99 %d  min %d  max %d",
		tk.Received, tk.PerSecond, pc.Mean, pc.P50, pc.P99, pc.Min, pc.Max)
	sampled := ""
	if r.Sampled {
		sampled = ", a random sample"
	}
	p.latency("started", r.ToStarted, sampled+"; chat sent -> session_started")
	p.latency("first tok", r.ToFirst, sampled+"; chat sent -> first token")
	p.latency("token gap", r.Gap, sampled+"; between tokens of a chat")
	p.latency("chat total", r.Total, sampled+"; chat sent -> end")
	if len(r.Escalations) == 0 {
		p.line("escalation", "none")
	} else {
		p.line("escalation", "%d sockets closed 1000 \"escalation\" after end, %d opened again; reasons:", c.EscalationCloses, c.Reconnects)
		p.counts(r.Escalations)
	}
	p.line("messages", "%d unexpected", r.Unexpected)
	perToken := ""
	if r.CPUPerToken > 0 {
		perToken = fmt.Sprintf("; %.1fµs per token while chatting", r.CPUPerToken)
	}
	p.tail(r.runTail, perToken)
	return p.err
}

// counts prints a tally under the previous line, most frequent first.
func (p *printer) counts(m map[string]int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b)) })
	for _, k := range keys {
		p.line("", "%6d  %s", m[k], k)
	}
}
