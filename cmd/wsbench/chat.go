package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
)

// chatConfig is what a chat run does.
type chatConfig struct {
	Conns      int           `report:"conns"`
	Chats      int           `report:"chats_per_conn"` // per connection; 0: until -duration
	Duration   time.Duration `report:"duration_s"`
	Message    string        `report:"message"`
	Channel    string        `report:"channel"`
	Data       string        `report:"data"` // raw JSON; empty: no data field
	NewThread  bool          `report:"new_thread"`
	Timeout    time.Duration `report:"timeout_s"`
	ErrorPause time.Duration `report:"error_pause_s"`
	Stagger    time.Duration `report:"stagger_s"`
	MaxSamples int           `report:"max_samples"`
	// ModelFirstToken is the model's own time to its first token, which
	// the server's added part leaves out (chatguard.go).
	ModelFirstToken time.Duration `report:"model_first_token_s"`
	// Resumable sends every chat with "resumable":true; ResumeAfter > 0
	// is resume mode (resume.go).
	Resumable     bool          `report:"resumable"`
	ResumeAfter   int           `report:"resume_after"`
	ResumeAway    time.Duration `report:"resume_away_s"`
	ResumeMissed  int           `report:"resume_missed"`
	ResumeLiveGap time.Duration `report:"resume_live_gap_s"`
}

// MarshalJSON writes the config with durations in seconds.
func (c chatConfig) MarshalJSON() ([]byte, error) { return configJSON(c) }

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
		fs.DurationVar(&cfg.ModelFirstToken, "model-first-token", 0, "the model's own time to its first token, left out of the server's added part (0: the local model, test/fakebedrock)")
		fs.BoolVar(&cfg.Resumable, "resumable", false, "send every chat with \"resumable\":true (PROTOCOL.md §3.9)")
		fs.IntVar(&cfg.ResumeAfter, "resume-after", 0, "resume mode: drop each chat's socket after `N` tokens, connect again (to the next -url) after -resume-away and resume; measures the catch-up (needs -resumable and -new-thread)")
		fs.DurationVar(&cfg.ResumeAway, "resume-away", 1200*time.Millisecond, "resume mode: how long the client is away (60 tokens at 50/s: 1.2s)")
		fs.IntVar(&cfg.ResumeMissed, "resume-missed", 0, "resume mode: stay away for `M` tokens at the pace the answer had before the drop, instead of -resume-away")
		fs.DurationVar(&cfg.ResumeLiveGap, "resume-live-gap", 10*time.Millisecond, "resume mode: the catch-up burst ends at the first gap between tokens this long")
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

// addChatFlags registers the connection flags of chat sockets, which send
// no hello and join no session.
func addChatFlags(fs *flag.FlagSet) *commonFlags {
	f := addConnectionFlags(fs, connectionHelp{
		url:    "server base `URLs`, comma-separated (loopback only); connections alternate between them",
		prefix: "thread id `prefix` of -new-thread (default: chat-<random>-, unique per run)",
		conc:   "connects in flight at once",
	})
	f.helloTimeout = time.Second // unused: validated only
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
	case c.ModelFirstToken < 0:
		return errors.New("-model-first-token must not be negative")
	case c.MaxSamples < 1:
		return errors.New("-max-samples must be at least 1")
	case c.ResumeAfter < 0 || c.ResumeAway < 0 || c.ResumeMissed < 0 || c.ResumeLiveGap <= 0:
		return errors.New("-resume-after and -resume-away must not be negative, -resume-live-gap must be positive")
	case c.ResumeAfter > 0 && (!c.Resumable || !c.NewThread):
		return errors.New("-resume-after needs -resumable and -new-thread")
	}
	return nil
}

// chatReport is the result of a chat run.
type chatReport struct {
	runHead[chatConfig]
	Chats     chatCounts     `json:"chats"`
	Tokens    tokenReport    `json:"tokens"`
	ToStarted latencySummary `json:"to_session_started"`
	ToFirst   latencySummary `json:"to_first_token"`
	// FirstAdded is the server's added part of the first token: its
	// arrival minus session_started's minus the model's first token.
	FirstAdded latencySummary   `json:"first_token_added"`
	Guardrail  *guardrailReport `json:"guardrail,omitempty"`
	Resume     *resumeReport    `json:"resume,omitempty"`
	Gap        latencySummary   `json:"token_gap"`
	Total      latencySummary   `json:"chat_total"`
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
	// escalated chat's end, as PROTOCOL.md §3.6 says; Reconnects the sockets opened
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
	if cfg.ResumeAfter > 0 {
		return chatResume(ctx, t, cfg, log)
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
			toAdded:   newReservoir(r.limit, perChat),
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

	guardBefore, guardOK := scrapeGuardrail(ctx, t)
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
	var toStarted, toFirst, toAdded, gaps, totals, perChatTokens []int32
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
		for _, m := range []*reservoir{&s.toStarted, &s.toFirst, &s.toAdded, &s.gaps, &s.totals, &s.perChat} {
			rep.Sampled = rep.Sampled || m.n > int64(len(m.s))
		}
		toStarted = append(toStarted, s.toStarted.s...)
		toFirst = append(toFirst, s.toFirst.s...)
		toAdded = append(toAdded, s.toAdded.s...)
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
	rep.FirstAdded = summarize(toAdded)
	guardAfter, guardAfterOK := scrapeGuardrail(context.WithoutCancel(ctx), t)
	rep.Guardrail = guardrailPerChat(guardBefore, guardAfter, guardOK, guardAfterOK, c.Ended)
	rep.Gap = summarize(gaps)
	rep.Total = summarize(totals)
	rep.Escalations = r.escalations.snapshot()
	rep.runTail = b.tail()
	if rep.Tokens.Received > 0 {
		rep.CPUPerToken = math.Round(float64(chatCPU.Nanoseconds())/float64(rep.Tokens.Received)/100) / 10
	}
	return rep, nil
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
	if r.Resume != nil {
		r.printResume(p, sampled)
	} else {
		r.printIssue15(p, sampled)
	}
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
