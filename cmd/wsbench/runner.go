package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"
)

// command is one subcommand: its flags and help, the checks of its config,
// and the run that makes its report. exec is the same for every subcommand:
// parse, check, resolve the target, run, print the report as text or JSON.
type command[C any, R interface{ print(io.Writer) error }] struct {
	name string
	// about is the help text between the usage line and the flags.
	about string
	// common registers the flags of the connection: addCommonFlags, or
	// addChatFlags for sockets that send no hello.
	common func(fs *flag.FlagSet) *commonFlags
	// flags registers the subcommand's own flags into cfg.
	flags func(fs *flag.FlagSet, cfg *C)
	// check fills in defaults that depend on other flags and validates
	// cfg; it runs before the target is resolved.
	check func(fs *flag.FlagSet, cfg *C) error
	run   func(ctx context.Context, t *target, cfg C, log logger) (R, error)
}

func (c command[C, R]) exec(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stdout)
	common := c.common(fs)
	var cfg C
	c.flags(fs, &cfg)
	fs.Usage = func() {
		// Usage text to stderr: a failed write has nowhere to be reported.
		_, _ = fmt.Fprintf(fs.Output(), "Usage: wsbench %s [flags]\n\n%s\n"+
			"Examples of the benchmark scenarios: wsbench -h.\n\nFlags:\n", c.name, c.about)
		fs.PrintDefaults()
	}
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if err := c.check(fs, &cfg); err != nil {
		return err
	}
	t, err := common.target(c.name)
	if err != nil {
		return err
	}
	rep, err := c.run(ctx, t, cfg, common.logger(stdout))
	if err != nil {
		return err
	}
	if common.jsonOut {
		return writeJSON(stdout, rep)
	}
	return rep.print(stdout)
}

// bench is the frame every run shares: the error tally, the servers' RSS
// before, at and after connecting, wsbench's own CPU, the sockets and their
// readers. A run is startBench, connect, the scenario, finish, and a report
// opened by head and closed by tail.
type bench struct {
	t       *target
	log     logger
	errs    *tally
	servers []serverRSS
	usage   usageMeter
	// readers tracks the reader goroutine of every socket opened.
	readers sync.WaitGroup
	conn    *connectResult
	// connectedAt is when connecting ended.
	connectedAt time.Time
}

// startBench makes sure n sockets fit in the file limit, starts measuring
// wsbench's CPU and samples each server's RSS before connecting.
func startBench(t *target, n int, log logger) (*bench, error) {
	if err := ensureFiles(n); err != nil {
		return nil, err
	}
	b := &bench{t: t, log: log, usage: startUsage(), errs: &tally{}, servers: newServerRSS(t)}
	for i := range b.servers {
		b.servers[i].sample(&b.servers[i].Before)
	}
	return b, nil
}

// connect opens n sockets with open, counts them per server and samples
// each server's RSS with them connected.
func (b *bench) connect(ctx context.Context, n int, open opener) *connectResult {
	b.conn = connectAll(ctx, b.t, n, open, b.errs, b.log)
	b.connectedAt = time.Now()
	countSockets(b.servers, b.conn.clients)
	for i := range b.servers {
		b.servers[i].sample(&b.servers[i].Connected)
	}
	return b.conn
}

// sessions opens n session sockets as plan says (see connect).
func (b *bench) sessions(ctx context.Context, n int, plan socketPlan) *connectResult {
	return b.connect(ctx, n, sessionOpener(b.t, plan, b.errs, &b.readers))
}

// dropped counts the sockets the server has closed since connecting.
func (b *bench) dropped() int {
	n := 0
	for _, c := range b.conn.clients {
		if c != nil && !c.alive.Load() {
			n++
		}
	}
	return n
}

// finish samples each server's RSS at the end and works out its RSS per
// socket (from the last settled sample, else the connected one), then
// closes open and waits for every reader, so that counts are final.
func (b *bench) finish(open []*client) {
	for i := range b.servers {
		s := &b.servers[i]
		s.sample(&s.End)
		after := s.Connected
		if n := len(s.Settled); n > 0 {
			after = s.Settled[n-1]
		}
		s.perSocket(after)
	}
	closeAll(open, b.t.connectConc)
	b.readers.Wait()
}

// runHead opens every report: what ran, against what, and how connecting
// went.
type runHead[C any] struct {
	Command     string        `json:"command"`
	URLs        []string      `json:"urls"`
	Config      C             `json:"config"`
	Interrupted bool          `json:"interrupted"`
	Connect     connectReport `json:"connect"`
}

func newHead[C any](ctx context.Context, b *bench, command string, cfg C) runHead[C] {
	return runHead[C]{
		Command:     command,
		URLs:        urlStrings(b.t),
		Config:      cfg,
		Interrupted: ctx.Err() != nil,
		Connect:     b.conn.report(),
	}
}

// runTail closes every report: the errors, the servers' memory and
// wsbench's own use.
type runTail struct {
	Errors  map[string]int `json:"errors"`
	Servers []serverRSS    `json:"servers,omitempty"`
	Tool    toolUsage      `json:"wsbench"`
}

// tail stops measuring wsbench's CPU: call it last.
func (b *bench) tail() runTail {
	return runTail{Errors: b.errs.snapshot(), Servers: b.servers, Tool: b.usage.stop()}
}

// every calls f every interval until the returned stop is called; stop
// waits for a call in progress. Progress lines use it.
func every(interval time.Duration, f func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				f()
			case <-done:
				return
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// cpuOf runs f and returns the CPU time wsbench used meanwhile, all
// goroutines included.
func cpuOf(f func()) time.Duration {
	cpu0, _ := selfUsage()
	f()
	cpu1, _ := selfUsage()
	return cpu1 - cpu0
}
