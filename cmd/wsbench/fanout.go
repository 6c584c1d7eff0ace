package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// fanoutConfig is what a fanout run does.
type fanoutConfig struct {
	Sockets    int           `report:"sockets"`
	Sessions   int           `report:"sessions"`
	Publishers int           `report:"publishers"`
	Rate       float64       `report:"rate"`
	Duration   time.Duration `report:"duration_s"`
	Warmup     time.Duration `report:"warmup_s"`
	Grace      time.Duration `report:"grace_s"`
	Late       time.Duration `report:"late_s"`
	MaxSamples int           `report:"max_samples"`
}

// MarshalJSON writes the config with durations in seconds.
func (c fanoutConfig) MarshalJSON() ([]byte, error) { return configJSON(c) }

var fanoutCommand = command[fanoutConfig, *fanoutReport]{
	name: "fanout",
	about: "N sockets over S sessions; P of them publish R broadcasts/s in total for -duration\n" +
		"after -warmup. Every socket of a session receives every broadcast (sender included):\n" +
		"expected deliveries = broadcasts sent x sockets on the session.",
	common: addCommonFlags,
	flags: func(fs *flag.FlagSet, cfg *fanoutConfig) {
		fs.IntVar(&cfg.Sockets, "sockets", 1000, "sockets `N` (each subscribes to one session)")
		fs.IntVar(&cfg.Sessions, "sessions", 100, "sessions `S`; socket i joins session i mod S")
		fs.IntVar(&cfg.Publishers, "publishers", 0, "publishers `P` (sockets 0..P-1, so spread over sessions; 0: one per session)")
		fs.Float64Var(&cfg.Rate, "rate", 100, "broadcasts per second `R`, all publishers together, evenly spaced")
		fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured publishing time")
		fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "publishing time before measuring (not counted)")
		fs.DurationVar(&cfg.Grace, "grace", 2*time.Second, "wait at most this long after the last broadcast for deliveries in flight")
		fs.DurationVar(&cfg.Late, "late", time.Millisecond, "a send this far behind its schedule counts as late")
		fs.IntVar(&cfg.MaxSamples, "max-samples", 8_000_000, "latency samples kept (4 bytes each); beyond, 1 in k deliveries is sampled")
	},
	check: func(_ *flag.FlagSet, cfg *fanoutConfig) error {
		if cfg.Publishers == 0 {
			cfg.Publishers = min(cfg.Sessions, cfg.Sockets)
		}
		return cfg.validate()
	},
	run: fanout,
}

func (c *fanoutConfig) validate() error {
	switch {
	case c.Sockets < 1:
		return errors.New("-sockets must be at least 1")
	case c.Sessions < 1 || c.Sessions > c.Sockets:
		return errors.New("-sessions must be between 1 and -sockets")
	case c.Publishers < 1 || c.Publishers > c.Sockets:
		return errors.New("-publishers must be between 1 and -sockets")
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return errors.New("-rate must be positive")
	case c.Duration <= 0:
		return errors.New("-duration must be positive")
	case c.Warmup < 0 || c.Grace < 0 || c.Late < 0:
		return errors.New("-warmup, -grace and -late must not be negative")
	case c.MaxSamples < 1:
		return errors.New("-max-samples must be at least 1")
	}
	return nil
}

// fanoutPlan is the layout of a run, fixed before connecting and read-only
// afterwards. Socket i is on session i mod S; publisher j is socket j. The
// k-th broadcast of the run is scheduled at k/R and sent by publisher k mod
// P, so each publisher sends every P/R seconds starting at j/R. Warm-up
// broadcasts carry negative sequence numbers, which is how receivers tell
// them apart without sharing a clock with the publishers.
type fanoutPlan struct {
	cfg            fanoutConfig
	pubSession     []int   // session of publisher j
	pubSlot        []int   // index of publisher j among its session's publishers
	pubsOnSession  []int   // publishers per session
	warmSends      []int64 // scheduled warm-up broadcasts of publisher j
	measuredSends  []int64 // scheduled measured broadcasts of publisher j
	sessionSends   []int64 // scheduled measured broadcasts per session
	stride         int64   // keep a latency sample every stride-th delivery
	latOffset      []int   // socket i's samples live at samples[latOffset[i]:latOffset[i+1]]
	samples        []int32 // latency samples (µs) of all sockets
	sessionSockets []int   // sockets planned per session
}

func newFanoutPlan(cfg fanoutConfig) *fanoutPlan {
	S, P := cfg.Sessions, cfg.Publishers
	p := &fanoutPlan{
		cfg:            cfg,
		pubSession:     make([]int, P),
		pubSlot:        make([]int, P),
		pubsOnSession:  make([]int, S),
		warmSends:      make([]int64, P),
		measuredSends:  make([]int64, P),
		sessionSends:   make([]int64, S),
		sessionSockets: make([]int, S),
	}
	for j := range P {
		s := j % S
		p.pubSession[j] = s
		p.pubSlot[j] = p.pubsOnSession[s]
		p.pubsOnSession[s]++
		m := int64(0)
		for ; p.offset(j, m) < cfg.Warmup; m++ {
			p.warmSends[j]++
		}
		for ; p.offset(j, m) < cfg.Warmup+cfg.Duration; m++ {
			p.measuredSends[j]++
		}
		p.sessionSends[s] += p.measuredSends[j]
	}
	var total int64
	for i := range cfg.Sockets {
		s := p.session(i)
		p.sessionSockets[s]++
		total += p.sessionSends[s]
	}
	p.stride = max(1, (total+int64(cfg.MaxSamples)-1)/int64(cfg.MaxSamples))
	p.latOffset = make([]int, cfg.Sockets+1)
	for i := range cfg.Sockets {
		p.latOffset[i+1] = p.latOffset[i] + int(p.sessionSends[p.session(i)]/p.stride) + 1
	}
	p.samples = make([]int32, p.latOffset[cfg.Sockets])
	return p
}

func (p *fanoutPlan) session(i int) int { return i % p.cfg.Sessions }

// offset is when publisher j sends its m-th broadcast, from the start.
func (p *fanoutPlan) offset(j int, m int64) time.Duration {
	// k·1e9 is exact in a float64 for any realistic k, and a quotient that
	// is a whole number of nanoseconds stays exact, so schedules land on the
	// boundaries of the warm-up and measured windows predictably.
	k := float64(int64(j) + m*int64(p.cfg.Publishers))
	return time.Duration(k * float64(time.Second) / p.cfg.Rate)
}

// receiver checks and counts the broadcasts one socket receives.
type receiver struct {
	plan    *fanoutPlan
	session int
	lastSeq []int64 // per publisher slot of the session
	lat     []int32 // latency samples, within plan.samples

	delivered atomic.Int64 // measured deliveries, polled during the grace period

	// Read after the reader goroutine has stopped.
	n          int64 // measured deliveries, for sampling
	warm       int64
	outOfOrder int64
	duplicates int64
	foreign    int64 // from a publisher of another session
	invalid    int64 // session_message without wsbench data
	unsampled  int64 // samples that did not fit (more deliveries than planned)
}

func (p *fanoutPlan) newReceiver(c *client) *receiver {
	r := &receiver{
		plan:    p,
		session: c.session,
		lastSeq: make([]int64, p.pubsOnSession[c.session]),
		lat:     p.samples[p.latOffset[c.idx]:p.latOffset[c.idx]:p.latOffset[c.idx+1]],
	}
	for i := range r.lastSeq {
		r.lastSeq[i] = math.MinInt64
	}
	return r
}

func (r *receiver) message(m *message, now time.Time) {
	if m.kind != kindSessionMessage {
		return
	}
	if !m.benchData() || m.p < 0 || m.p >= int64(len(r.plan.pubSession)) {
		r.invalid++
		return
	}
	if r.plan.pubSession[m.p] != r.session {
		r.foreign++
		return
	}
	slot := r.plan.pubSlot[m.p]
	switch last := r.lastSeq[slot]; {
	case m.s == last:
		r.duplicates++
		return
	case m.s < last:
		r.outOfOrder++
	default:
		r.lastSeq[slot] = m.s
	}
	if m.s < 0 {
		r.warm++
		return
	}
	r.n++
	r.delivered.Add(1)
	if r.n%r.plan.stride != 0 {
		return
	}
	if len(r.lat) == cap(r.lat) {
		r.unsampled++
		return
	}
	r.lat = append(r.lat, micros(now.Sub(time.Unix(0, m.t))))
}

// pubResult is what one publisher did.
type pubResult struct {
	active   bool
	warm     int64
	measured int64
	late     int64
	maxLag   time.Duration
}

// publish sends publisher j's broadcasts on schedule from t0. A send behind
// schedule goes out at once (the schedule is kept, not shifted); the message
// carries the real send time.
func (p *fanoutPlan) publish(ctx context.Context, c *client, j int, t0 time.Time, errs *tally) pubResult {
	r := pubResult{active: true}
	warm := p.warmSends[j]
	total := warm + p.measuredSends[j]
	buf := make([]byte, 0, 128)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for m := int64(0); m < total; m++ {
		at := t0.Add(p.offset(j, m))
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return r
			}
		} else if ctx.Err() != nil {
			return r
		}
		now := time.Now()
		seq := m - warm
		if seq >= 0 {
			lag := now.Sub(at)
			if lag > p.cfg.Late {
				r.late++
			}
			r.maxLag = max(r.maxLag, lag)
		}
		buf = appendBroadcast(buf[:0], now.UnixNano(), j, seq)
		if err := c.write(buf); err != nil {
			if !c.closing.Load() {
				errs.add("publish: " + errKind(err))
			}
			return r
		}
		if seq < 0 {
			r.warm++
		} else {
			r.measured++
		}
	}
	return r
}

// fanoutReport is the result of a fanout run.
type fanoutReport struct {
	runHead[fanoutConfig]
	Broadcasts broadcastReport `json:"broadcasts"`
	Deliveries deliveryReport  `json:"deliveries"`
	Latency    latencySummary  `json:"latency"`
	// SampleEvery is k when 1 in k deliveries was sampled for latency.
	SampleEvery int64 `json:"latency_sample_every"`
	Dropped     int   `json:"sockets_dropped"`
	runTail
	// CPUPerDelivery is wsbench's CPU time while publishing and in the
	// grace period (publishers and receivers) per delivery received.
	CPUPerDelivery float64 `json:"wsbench_cpu_per_delivery_us"`
	// ServerCPU is each -pid server's CPU time over the same time, in
	// seconds, and ServerCPUPerDelivery their sum per delivery received:
	// the cost of a delivery, which other work on the machine changes
	// far less than it changes latency.
	ServerCPU            []float64 `json:"server_cpu_publishing_s,omitempty"`
	ServerCPUPerDelivery float64   `json:"server_cpu_per_delivery_us,omitempty"`
}

// serverCPU sets ServerCPU and ServerCPUPerDelivery from the servers' CPU
// times before and after publishing, for n deliveries. A server whose times
// could not be read leaves both unset.
func (r *fanoutReport) serverCPU(before, after []time.Duration, n int64) {
	if len(before) == 0 || len(before) != len(after) {
		return
	}
	var sum time.Duration
	out := make([]float64, len(before))
	for i := range before {
		if before[i] < 0 || after[i] < 0 {
			return
		}
		sum += after[i] - before[i]
		out[i] = (after[i] - before[i]).Seconds()
	}
	r.ServerCPU = out
	r.ServerCPUPerDelivery = math.Round(float64(sum.Microseconds())/float64(n)*10) / 10
}

type broadcastReport struct {
	Publishers int     `json:"publishers_active"`
	Sent       int64   `json:"sent"`
	WarmUp     int64   `json:"warmup_sent"`
	Late       int64   `json:"late"`
	MaxLagUs   int32   `json:"max_lag_us"`
	Seconds    float64 `json:"seconds"`
	PerSecond  float64 `json:"per_second"`
}

type deliveryReport struct {
	Expected   int64   `json:"expected"`
	Received   int64   `json:"received"`
	Lost       int64   `json:"lost"`
	LostPct    float64 `json:"lost_pct"`
	OutOfOrder int64   `json:"out_of_order"`
	Duplicates int64   `json:"duplicates"`
	Foreign    int64   `json:"foreign"`
	Invalid    int64   `json:"invalid"`
	WarmUp     int64   `json:"warmup_received"`
	PerSecond  float64 `json:"per_second"`
}

// fanout runs the benchmark. Every path after connecting closes all sockets
// and waits for their readers, so counts are final when it returns.
func fanout(ctx context.Context, t *target, cfg fanoutConfig, log logger) (*fanoutReport, error) {
	b, err := startBench(t, cfg.Sockets, log)
	if err != nil {
		return nil, err
	}
	plan := newFanoutPlan(cfg)
	errs := b.errs

	log.printf("fanout: connecting %d sockets over %d sessions to %s", cfg.Sockets, cfg.Sessions, urlList(t))
	receivers := make([]*receiver, cfg.Sockets)
	conn := b.sessions(ctx, cfg.Sockets, socketPlan{
		sessions: cfg.Sessions,
		handler: func(c *client) handler {
			r := plan.newReceiver(c)
			receivers[c.idx] = r
			return r
		},
	})
	log.printf("connected %d, failed %d in %.2fs", conn.ok, conn.failed, conn.elapsed.Seconds())

	subs := aliveBySession(conn.clients, cfg.Sessions)
	pubs := make([]pubResult, cfg.Publishers)
	var window time.Duration
	var publishCPU time.Duration
	var serverCPU0, serverCPU1 []time.Duration
	if ctx.Err() == nil && conn.ok > 0 {
		serverCPU0 = serversCPU(b.servers)
		publishCPU = cpuOf(func() {
			t0 := time.Now().Add(50 * time.Millisecond)
			log.printf("publishing %.0f broadcasts/s: %s warm-up, then %s measured", cfg.Rate, cfg.Warmup, cfg.Duration)
			var pw sync.WaitGroup
			for j := range cfg.Publishers {
				if c := conn.clients[j]; c != nil {
					pw.Go(func() { pubs[j] = plan.publish(ctx, c, j, t0, errs) })
				}
			}
			pw.Wait()
			// Sends are spread over [warm-up, warm-up + duration); a late
			// publisher stretches the window, an interruption shortens it.
			window = max(0, time.Since(t0.Add(cfg.Warmup)))
			if ctx.Err() == nil {
				window = max(window, cfg.Duration)
			}
			expected := expectedDeliveries(plan, pubs, subs)
			log.printf("published; waiting up to %s for deliveries in flight", cfg.Grace)
			waitDeliveries(receivers, expected, cfg.Grace)
		})
		serverCPU1 = serversCPU(b.servers)
	}

	dropped := b.dropped()
	b.finish(conn.clients)

	rep := &fanoutReport{
		runHead:     newHead(ctx, b, "fanout", cfg),
		SampleEvery: plan.stride,
		Dropped:     dropped,
	}
	bc := &rep.Broadcasts
	var maxLag time.Duration
	for _, p := range pubs {
		if p.active {
			bc.Publishers++
		}
		bc.Sent += p.measured
		bc.WarmUp += p.warm
		bc.Late += p.late
		maxLag = max(maxLag, p.maxLag)
	}
	bc.MaxLagUs = micros(maxLag)
	bc.Seconds = window.Seconds()
	bc.PerSecond = rate(bc.Sent, window)

	d := &rep.Deliveries
	d.Expected = expectedDeliveries(plan, pubs, subs)
	n := 0 // compact the samples of all sockets to the front
	for _, r := range receivers {
		if r == nil {
			continue
		}
		d.Received += r.delivered.Load()
		d.OutOfOrder += r.outOfOrder
		d.Duplicates += r.duplicates
		d.Foreign += r.foreign
		d.Invalid += r.invalid
		d.WarmUp += r.warm
		n += copy(plan.samples[n:], r.lat)
		if r.unsampled > 0 {
			errs.add("more deliveries than broadcasts sent (latency samples dropped)")
		}
	}
	d.Lost = max(0, d.Expected-d.Received)
	if d.Expected > 0 {
		d.LostPct = float64(d.Lost) / float64(d.Expected) * 100
	}
	d.PerSecond = rate(d.Received, window)
	rep.Latency = summarize(plan.samples[:n])
	rep.runTail = b.tail()
	if n := d.Received + d.WarmUp; n > 0 {
		rep.CPUPerDelivery = math.Round(float64(publishCPU.Microseconds())/float64(n)*10) / 10
		rep.serverCPU(serverCPU0, serverCPU1, n)
	}
	return rep, nil
}

// expectedDeliveries is broadcasts sent × sockets connected on the session
// when publishing began.
func expectedDeliveries(p *fanoutPlan, pubs []pubResult, subs []int) int64 {
	var n int64
	for j, r := range pubs {
		n += r.measured * int64(subs[p.pubSession[j]])
	}
	return n
}

// waitDeliveries waits until the receivers have counted expected measured
// deliveries or grace has passed. It ignores ctx: after Ctrl-C the grace
// period still runs so the report counts deliveries in flight.
func waitDeliveries(receivers []*receiver, expected int64, grace time.Duration) {
	deadline := time.Now().Add(grace)
	for {
		var got int64
		for _, r := range receivers {
			if r != nil {
				got += r.delivered.Load()
			}
		}
		if got >= expected || time.Now().After(deadline) {
			return
		}
		time.Sleep(min(20*time.Millisecond, time.Until(deadline)))
	}
}

func (r *fanoutReport) print(w io.Writer) error {
	p := &printer{w: w}
	c := r.Config
	p.line("fanout", "%d sockets, %d sessions, %d publishers, %g broadcasts/s, %s measured after %s warm-up%s",
		c.Sockets, c.Sessions, c.Publishers, c.Rate, c.Duration, c.Warmup, interrupted(r.Interrupted))
	p.line("servers", "%s", joinComma(r.URLs))
	p.connect(r.Connect, "dial + hello")
	b := r.Broadcasts
	p.line("broadcasts", "%d sent (+%d warm-up) by %d publishers over %.2fs (%.1f/s); late (>%s) %d, max lag %s",
		b.Sent, b.WarmUp, b.Publishers, b.Seconds, b.PerSecond, c.Late, b.Late, ms(b.MaxLagUs))
	d := r.Deliveries
	p.line("deliveries", "expected %d, received %d, lost %d (%.3f%%), %.1f/s", d.Expected, d.Received, d.Lost, d.LostPct, d.PerSecond)
	p.line("order", "out-of-order %d, duplicates %d, foreign session %d, invalid %d", d.OutOfOrder, d.Duplicates, d.Foreign, d.Invalid)
	sampled := ""
	if r.SampleEvery > 1 {
		sampled = fmt.Sprintf(", 1 in %d deliveries", r.SampleEvery)
	}
	p.latency("latency", r.Latency, sampled)
	p.line("sockets", "%d dropped by the server during the run", r.Dropped)
	if len(r.ServerCPU) > 0 {
		p.line("server cpu", "%s s while publishing; %.1fµs per delivery", joinFloats(r.ServerCPU), r.ServerCPUPerDelivery)
	}
	perDelivery := ""
	if r.CPUPerDelivery > 0 {
		perDelivery = fmt.Sprintf("; %.1fµs per delivery while publishing", r.CPUPerDelivery)
	}
	p.tail(r.runTail, perDelivery)
	return p.err
}
