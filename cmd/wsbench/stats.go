package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// latencySummary is the distribution of a set of latency samples, in
// microseconds.
type latencySummary struct {
	Samples int     `json:"samples"`
	Min     int32   `json:"min_us"`
	Mean    float64 `json:"mean_us"`
	P50     int32   `json:"p50_us"`
	P90     int32   `json:"p90_us"`
	P99     int32   `json:"p99_us"`
	Max     int32   `json:"max_us"`
}

// summarize sorts samples in place and summarizes them. Percentiles use the
// nearest-rank method, so every reported value is an observed sample.
func summarize(samples []int32) latencySummary {
	if len(samples) == 0 {
		return latencySummary{}
	}
	slices.Sort(samples)
	var sum int64
	for _, v := range samples {
		sum += int64(v)
	}
	return latencySummary{
		Samples: len(samples),
		Min:     samples[0],
		Mean:    math.Round(float64(sum)/float64(len(samples))*10) / 10,
		P50:     percentile(samples, 50),
		P90:     percentile(samples, 90),
		P99:     percentile(samples, 99),
		Max:     samples[len(samples)-1],
	}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest sample with at least p% of the samples at or below
// it. It returns 0 for no samples; p <= 0 gives the minimum.
func percentile(sorted []int32, p float64) int32 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon keeps 90% of 10 samples at rank 9, not 10 (0.9*10 is
	// 9.000000000000002 in floating point).
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// micros converts d to microseconds for a latency sample, clamped to int32
// (about 35 minutes) and to zero for clock steps backwards.
func micros(d time.Duration) int32 {
	us := d.Microseconds()
	switch {
	case us < 0:
		return 0
	case us > math.MaxInt32:
		return math.MaxInt32
	}
	return int32(us)
}

// tally counts events by name (error kinds, close codes). It is safe for
// concurrent use; events are expected to be rare.
type tally struct {
	mu sync.Mutex
	m  map[string]int
}

func (t *tally) add(key string) {
	t.mu.Lock()
	if t.m == nil {
		t.m = make(map[string]int)
	}
	t.m[key]++
	t.mu.Unlock()
}

// snapshot returns a copy of the counts.
func (t *tally) snapshot() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.m))
	for k, v := range t.m {
		out[k] = v
	}
	return out
}

// errKind names an error for the error tally without addresses or ports, so
// that thousands of sockets failing the same way make one entry.
func errKind(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return closeName(ce.Code)
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free local port"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, websocket.ErrReadLimit):
		return "read limit exceeded"
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return "timeout"
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	return truncate(msg, 60)
}

// closeName names a WebSocket close code.
func closeName(code int) string {
	name := ""
	switch code {
	case websocket.CloseNormalClosure:
		name = " normal"
	case websocket.CloseGoingAway:
		name = " going away"
	case websocket.CloseAbnormalClosure:
		name = " abnormal (no close frame)"
	case websocket.ClosePolicyViolation:
		name = " policy violation"
	case websocket.CloseMessageTooBig:
		name = " message too big"
	case websocket.CloseInternalServerErr:
		name = " internal error"
	case websocket.CloseServiceRestart:
		name = " service restart"
	case 4001:
		name = " hello required (reference server)"
	}
	return "close " + strconv.Itoa(code) + name
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// rate returns n per second of d, or 0 for an empty d.
func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// bytesIEC formats a byte count as B, KiB, MiB or GiB.
func bytesIEC(v float64) string {
	abs := math.Abs(v)
	switch {
	case abs >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case abs >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case abs >= 1<<10:
		return fmt.Sprintf("%.1f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}

// ms formats microseconds as milliseconds.
func ms(us int32) string { return strconv.FormatFloat(float64(us)/1000, 'f', 2, 64) + "ms" }
