package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestPercentile(t *testing.T) {
	ten := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	hundred := make([]int32, 100)
	for i := range hundred {
		hundred[i] = int32(i + 1)
	}
	tests := []struct {
		name   string
		sorted []int32
		p      float64
		want   int32
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", []int32{7}, 50, 7},
		{"one sample p99", []int32{7}, 99, 7},
		{"ten p0 is the minimum", ten, 0, 1},
		{"ten p10", ten, 10, 1},
		{"ten p50", ten, 50, 5},
		{"ten p90", ten, 90, 9},
		{"ten p91", ten, 91, 10},
		{"ten p99", ten, 99, 10},
		{"ten p100", ten, 100, 10},
		{"ten above 100 clamps", ten, 150, 10},
		{"hundred p50", hundred, 50, 50},
		{"hundred p99", hundred, 99, 99},
		{"hundred p99.9", hundred, 99.9, 100},
		{"two p50", []int32{3, 8}, 50, 3},
		{"two p51", []int32{3, 8}, 51, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %d, want %d", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		name    string
		samples []int32
		want    latencySummary
	}{
		{"none", nil, latencySummary{}},
		{"unsorted", []int32{30, 10, 20, 40}, latencySummary{Samples: 4, Min: 10, Mean: 25, P50: 20, P90: 40, P99: 40, Max: 40}},
		{"same values", []int32{5, 5, 5}, latencySummary{Samples: 3, Min: 5, Mean: 5, P50: 5, P90: 5, P99: 5, Max: 5}},
		{"mean rounds to 0.1", []int32{1, 2, 2}, latencySummary{Samples: 3, Min: 1, Mean: 1.7, P50: 2, P90: 2, P99: 2, Max: 2}},
		{"large values do not overflow the mean", []int32{math.MaxInt32, math.MaxInt32},
			latencySummary{Samples: 2, Min: math.MaxInt32, Mean: math.MaxInt32, P50: math.MaxInt32, P90: math.MaxInt32, P99: math.MaxInt32, Max: math.MaxInt32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := summarize(tt.samples); got != tt.want {
				t.Errorf("summarize = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMicros(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int32
	}{
		{0, 0},
		{-time.Second, 0},
		{1500 * time.Nanosecond, 1},
		{2 * time.Second, 2_000_000},
		{time.Hour, math.MaxInt32},
	}
	for _, tt := range tests {
		if got := micros(tt.d); got != tt.want {
			t.Errorf("micros(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func TestTally(t *testing.T) {
	var tl tally
	if got := tl.snapshot(); len(got) != 0 {
		t.Errorf("empty tally = %v", got)
	}
	tl.add("a")
	tl.add("b")
	tl.add("a")
	got := tl.snapshot()
	if len(got) != 2 || got["a"] != 2 || got["b"] != 1 {
		t.Errorf("snapshot = %v", got)
	}
	got["a"] = 99
	if tl.snapshot()["a"] != 2 {
		t.Error("snapshot is not a copy")
	}
}

func TestErrKind(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&websocket.CloseError{Code: 1008, Text: "slow"}, "close 1008 policy violation"},
		{fmt.Errorf("read: %w", &websocket.CloseError{Code: 4001}), "close 4001 hello required (reference server)"},
		{&websocket.CloseError{Code: 3999}, "close 3999"},
		{io.EOF, "eof"},
		{io.ErrUnexpectedEOF, "eof"},
		{fmt.Errorf("dial tcp 127.0.0.1:1: connect: %w", syscall.ECONNREFUSED), "connection refused"},
		{errors.New("read tcp 127.0.0.1:5000->127.0.0.1:8000: something odd"), "something odd"},
	}
	for _, tt := range tests {
		if got := errKind(tt.err); got != tt.want {
			t.Errorf("errKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"status file", "Name:\twsserver\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n", 12345 * 1024, false},
		{"zero", "VmRSS:\t0 kB\n", 0, false},
		{"missing", "Name:\tkthreadd\nState:\tS\n", 0, true},
		{"bad unit", "VmRSS:\t12 MB\n", 0, true},
		{"bad number", "VmRSS:\tlots kB\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseVmRSS(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseVmRSS = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	// Fields after the command: state ppid pgrp session tty tpgid flags
	// minflt cminflt majflt cmajflt utime stime ...
	const rest = " S 1 2 3 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 12345 1000000 3000"
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"plain command", "4242 (wsserver)" + rest, 3250 * time.Millisecond, false},
		{"command with spaces and parens", "4242 (ws (x) y)" + rest, 3250 * time.Millisecond, false},
		{"short", "4242 (wsserver) S 1 2", 0, true},
		{"no command", "4242 wsserver S", 0, true},
		{"bad number", "4242 (wsserver) S 1 2 3 0 -1 4194560 100 0 0 0 x 75", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.in, 100)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU = %v, %v; want %v, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestBytesIEC(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{512, "512 B"},
		{16 * 1024, "16.0 KiB"},
		{-2048, "-2.0 KiB"},
		{3.5 * (1 << 20), "3.5 MiB"},
		{1 << 31, "2.00 GiB"},
	}
	for _, tt := range tests {
		if got := bytesIEC(tt.v); got != tt.want {
			t.Errorf("bytesIEC(%v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}

func TestFanoutPlan(t *testing.T) {
	tests := []struct {
		name                string
		cfg                 fanoutConfig
		wantWarm, wantSent  int64
		wantStride          int64
		wantPubsOnSession   []int
		wantSessionSends    []int64
		wantPublisherSlot4  int
		wantSessionSockets0 int
	}{
		{
			name: "one publisher per session",
			cfg: fanoutConfig{Sockets: 10, Sessions: 5, Publishers: 5, Rate: 100,
				Warmup: 100 * time.Millisecond, Duration: time.Second, MaxSamples: 1 << 20},
			// Broadcasts k/100 s: k = 0..9 warm-up, 10..109 measured.
			wantWarm: 10, wantSent: 100, wantStride: 1,
			wantPubsOnSession: []int{1, 1, 1, 1, 1}, wantSessionSends: []int64{20, 20, 20, 20, 20},
			wantPublisherSlot4: 0, wantSessionSockets0: 2,
		},
		{
			name: "more publishers than sessions, sampled",
			cfg: fanoutConfig{Sockets: 7, Sessions: 3, Publishers: 5, Rate: 50,
				Duration: 2 * time.Second, MaxSamples: 100},
			// 100 broadcasts, 20 per publisher; sessions get publishers {0,3}, {1,4}, {2}.
			wantWarm: 0, wantSent: 100, wantStride: 3,
			wantPubsOnSession: []int{2, 2, 1}, wantSessionSends: []int64{40, 40, 20},
			wantPublisherSlot4: 1, wantSessionSockets0: 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newFanoutPlan(tt.cfg)
			var warm, sent int64
			for j := range tt.cfg.Publishers {
				warm += p.warmSends[j]
				sent += p.measuredSends[j]
			}
			if warm != tt.wantWarm || sent != tt.wantSent || p.stride != tt.wantStride {
				t.Errorf("warm %d, sent %d, stride %d; want %d, %d, %d", warm, sent, p.stride, tt.wantWarm, tt.wantSent, tt.wantStride)
			}
			if fmt.Sprint(p.pubsOnSession) != fmt.Sprint(tt.wantPubsOnSession) || fmt.Sprint(p.sessionSends) != fmt.Sprint(tt.wantSessionSends) {
				t.Errorf("publishers per session %v, sends per session %v; want %v, %v",
					p.pubsOnSession, p.sessionSends, tt.wantPubsOnSession, tt.wantSessionSends)
			}
			if tt.cfg.Publishers > 4 && p.pubSlot[4] != tt.wantPublisherSlot4 {
				t.Errorf("slot of publisher 4 = %d, want %d", p.pubSlot[4], tt.wantPublisherSlot4)
			}
			if p.sessionSockets[0] != tt.wantSessionSockets0 {
				t.Errorf("sockets on session 0 = %d, want %d", p.sessionSockets[0], tt.wantSessionSockets0)
			}
			// Every socket has room for its session's deliveries, sampled.
			for i := range tt.cfg.Sockets {
				room := int64(p.latOffset[i+1] - p.latOffset[i])
				if need := p.sessionSends[p.session(i)] / p.stride; room < need {
					t.Errorf("socket %d: room for %d samples, needs %d", i, room, need)
				}
			}
		})
	}
}

// TestReceiver feeds one socket's receiver a scripted stream of broadcasts.
func TestReceiver(t *testing.T) {
	p := newFanoutPlan(fanoutConfig{Sockets: 4, Sessions: 2, Publishers: 4, Rate: 10, Duration: time.Second, MaxSamples: 100})
	r := p.newReceiver(&client{idx: 0, session: 0})
	now := time.Now()
	send := func(pub, seq int64) {
		m := message{kind: kindSessionMessage, has: hasT | hasP | hasS, t: now.UnixNano(), p: pub, s: seq}
		r.message(&m, now.Add(time.Millisecond))
	}
	send(0, -1) // warm-up
	send(0, 0)
	send(2, 0) // the other publisher of session 0
	send(0, 1)
	send(0, 1) // duplicate: not a delivery
	send(0, 3)
	send(0, 2) // out of order, still a delivery
	send(1, 0) // publisher 1 is on session 1
	send(9, 0) // no such publisher
	r.message(&message{kind: kindSessionMessage}, now)
	r.message(&message{kind: kindPong}, now)
	if r.warm != 1 || r.delivered.Load() != 5 || r.duplicates != 1 || r.outOfOrder != 1 || r.foreign != 1 || r.invalid != 2 {
		t.Errorf("receiver = warm %d, delivered %d, dup %d, ooo %d, foreign %d, invalid %d; want 1, 5, 1, 1, 1, 2",
			r.warm, r.delivered.Load(), r.duplicates, r.outOfOrder, r.foreign, r.invalid)
	}
	if len(r.lat) != 5 || r.lat[0] != 1000 {
		t.Errorf("latency samples = %v, want 5 of 1000µs", r.lat)
	}
}

func TestServerOf(t *testing.T) {
	tests := []struct {
		name                     string
		sockets, sessions, urls  int
		wantPerServer            []int
		wantSession0, wantFirsts []int // servers of session 0's sockets; of each session's first socket
	}{
		{"one server", 6, 2, 1, []int{6}, []int{0, 0, 0}, []int{0, 0}},
		{"two servers, even sessions", 8, 2, 2, []int{4, 4}, []int{0, 1, 0, 1}, []int{0, 1}},
		{"two servers, one session per socket", 5, 5, 2, []int{3, 2}, []int{0}, []int{0, 1, 0, 1, 0}},
		{"three servers, one session", 6, 1, 3, []int{2, 2, 2}, []int{0, 1, 2, 0, 1, 2}, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			per := make([]int, tt.urls)
			var session0, firsts []int
			for i := range tt.sockets {
				srv := serverOf(i, tt.sessions, tt.urls)
				per[srv]++
				if i%tt.sessions == 0 {
					session0 = append(session0, srv)
				}
				if i < tt.sessions {
					firsts = append(firsts, srv)
				}
			}
			if fmt.Sprint(per, session0, firsts) != fmt.Sprint(tt.wantPerServer, tt.wantSession0, tt.wantFirsts) {
				t.Errorf("per server %v, session 0 on %v, first sockets on %v; want %v, %v, %v",
					per, session0, firsts, tt.wantPerServer, tt.wantSession0, tt.wantFirsts)
			}
		})
	}
}
