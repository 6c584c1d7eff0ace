package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// idleConfig is what an idle run does.
type idleConfig struct {
	Sockets     int           `report:"sockets"`
	Sessions    int           `report:"sessions"` // 0: one session per socket
	Duration    time.Duration `report:"duration_s"`
	Settle      time.Duration `report:"settle_s"`
	Samples     int           `report:"rss_samples"`
	SampleEvery time.Duration `report:"rss_sample_every_s"`
}

// MarshalJSON writes the config with durations in seconds.
func (c idleConfig) MarshalJSON() ([]byte, error) { return configJSON(c) }

var idleCommand = command[idleConfig, *idleReport]{
	name: "idle",
	about: "Open N sockets (hello done), hold them, and with -pid report the server's RSS per\n" +
		"socket: (RSS after settling - RSS before connecting) / sockets on that server.",
	common: addCommonFlags,
	flags: func(fs *flag.FlagSet, cfg *idleConfig) {
		fs.IntVar(&cfg.Sockets, "sockets", 1000, "sockets `N` to open and hold")
		fs.IntVar(&cfg.Sessions, "sessions", 0, "sessions `S`; socket i joins session i mod S (0: one session per socket)")
		fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "hold the sockets this long after connecting (at least settle + sampling)")
		fs.DurationVar(&cfg.Settle, "settle", 5*time.Second, "wait after connecting before sampling the server's RSS")
		fs.IntVar(&cfg.Samples, "samples", 3, "RSS samples after settling; the last one gives the per-socket figure")
		fs.DurationVar(&cfg.SampleEvery, "sample-every", time.Second, "time between RSS samples")
	},
	check: func(_ *flag.FlagSet, cfg *idleConfig) error {
		switch {
		case cfg.Sockets < 1:
			return errors.New("-sockets must be at least 1")
		case cfg.Sessions < 0 || cfg.Sessions > cfg.Sockets:
			return errors.New("-sessions must be between 0 and -sockets")
		case cfg.Duration < 0 || cfg.Settle < 0 || cfg.SampleEvery <= 0 || cfg.Samples < 0:
			return errors.New("-duration, -settle and -samples must not be negative, -sample-every must be positive")
		}
		return nil
	},
	run: idle,
}

// idleReport is the result of an idle run.
type idleReport struct {
	runHead[idleConfig]
	HeldSeconds float64 `json:"held_seconds"`
	Dropped     int     `json:"sockets_dropped"`
	Messages    int64   `json:"unexpected_messages"`
	runTail
}

// idleSocket counts messages an idle socket should not get.
type idleSocket struct{ messages int64 }

func (s *idleSocket) message(*message, time.Time) { s.messages++ }

func idle(ctx context.Context, t *target, cfg idleConfig, log logger) (*idleReport, error) {
	b, err := startBench(t, cfg.Sockets, log)
	if err != nil {
		return nil, err
	}
	sessions := cfg.Sessions
	if sessions == 0 {
		sessions = cfg.Sockets
	}
	servers := b.servers

	log.printf("idle: connecting %d sockets over %d sessions to %s", cfg.Sockets, sessions, urlList(t))
	sockets := make([]*idleSocket, cfg.Sockets)
	conn := b.sessions(ctx, cfg.Sockets, socketPlan{
		sessions: sessions,
		handler: func(c *client) handler {
			s := &idleSocket{}
			sockets[c.idx] = s
			return s
		},
	})
	held := b.connectedAt
	log.printf("connected %d, failed %d in %.2fs; holding", conn.ok, conn.failed, conn.elapsed.Seconds())

	if len(servers) > 0 && sleepUntil(ctx, held.Add(cfg.Settle)) {
		for k := range cfg.Samples {
			if k > 0 && !sleepUntil(ctx, time.Now().Add(cfg.SampleEvery)) {
				break
			}
			for i := range servers {
				var v int64
				servers[i].sample(&v)
				servers[i].Settled = append(servers[i].Settled, v)
			}
			log.printf("server rss sample %d/%d taken", k+1, cfg.Samples)
		}
	}
	holdUntil(ctx, held.Add(cfg.Duration), conn.clients)
	heldFor := time.Since(held)

	dropped := b.dropped()
	b.finish(conn.clients)

	rep := &idleReport{
		runHead:     newHead(ctx, b, "idle", cfg),
		HeldSeconds: heldFor.Seconds(),
		Dropped:     dropped,
	}
	for _, s := range sockets {
		if s != nil {
			rep.Messages += s.messages
		}
	}
	rep.runTail = b.tail()
	return rep, nil
}

func (r *idleReport) print(w io.Writer) error {
	p := &printer{w: w}
	sessions := fmt.Sprint(r.Config.Sessions)
	if r.Config.Sessions == 0 {
		sessions = "one per socket"
	}
	p.line("idle", "%d sockets, sessions: %s, held %.1fs%s", r.Config.Sockets, sessions, r.HeldSeconds, interrupted(r.Interrupted))
	p.line("servers", "%s", joinComma(r.URLs))
	p.connect(r.Connect, "dial + hello")
	p.line("sockets", "%d dropped by the server while held, %d unexpected messages", r.Dropped, r.Messages)
	p.tail(r.runTail, "")
	return p.err
}

// holdUntil waits until at, ctx's end, or until no socket is left connected
// (nothing would be held any more).
func holdUntil(ctx context.Context, at time.Time, clients []*client) {
	for time.Now().Before(at) {
		next := time.Now().Add(100 * time.Millisecond)
		if next.After(at) {
			next = at
		}
		if !sleepUntil(ctx, next) {
			return
		}
		left := false
		for _, c := range clients {
			if c != nil && c.alive.Load() {
				left = true
				break
			}
		}
		if !left {
			return
		}
	}
}
