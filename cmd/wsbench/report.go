package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"time"
)

// printer writes the human-readable report: one "label: text" line per
// fact, keeping the first write error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) line(label, format string, args ...any) {
	if p.err != nil {
		return
	}
	if label != "" {
		label += ":"
	}
	_, p.err = fmt.Fprintf(p.w, "%-12s"+format+"\n", append([]any{label}, args...)...)
}

// connect prints how connecting went; what names what a socket's latency
// spans.
func (p *printer) connect(c connectReport, what string) {
	p.line("connect", "%d connected, %d failed of %d in %.2fs (%.1f/s)",
		c.Connected, c.Failed, c.Sockets, c.Seconds, c.PerSecond)
	if c.Latency.Samples > 0 {
		p.line("", "per socket (%s): p50 %s  p90 %s  p99 %s  max %s", what,
			ms(c.Latency.P50), ms(c.Latency.P90), ms(c.Latency.P99), ms(c.Latency.Max))
	}
}

func (p *printer) latency(label string, l latencySummary, note string) {
	if l.Samples == 0 {
		p.line(label, "no samples")
		return
	}
	p.line(label, "p50 %s  p90 %s  p99 %s  max %s  (mean %.2fms, %d samples%s)",
		ms(l.P50), ms(l.P90), ms(l.P99), ms(l.Max), l.Mean/1000, l.Samples, note)
}

// errors prints the error tally, most frequent first.
func (p *printer) errors(m map[string]int) {
	if len(m) == 0 {
		p.line("errors", "none")
		return
	}
	p.tally("errors", m)
}

// counts prints a tally under the previous line, most frequent first.
func (p *printer) counts(m map[string]int) { p.tally("", m) }

// tally prints one line per key of m, most frequent first, the first one
// labelled.
func (p *printer) tally(label string, m map[string]int) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b))
	})
	for _, k := range keys {
		p.line(label, "%6d  %s", m[k], k)
		label = ""
	}
}

func (p *printer) servers(servers []serverRSS) {
	for _, s := range servers {
		if s.Error != "" {
			p.line("server rss", "pid %d: %s", s.PID, s.Error)
			continue
		}
		settled := ""
		if n := len(s.Settled); n > 0 {
			parts := make([]string, n)
			for i, v := range s.Settled {
				parts[i] = bytesIEC(float64(v))
			}
			settled = ", settled " + strings.Join(parts, " / ")
		}
		p.line("server rss", "pid %d (%s): before %s, connected %s%s, end %s",
			s.PID, s.URL, bytesIEC(float64(s.Before)), bytesIEC(float64(s.Connected)), settled, bytesIEC(float64(s.End)))
		after := "connected"
		if len(s.Settled) > 0 {
			after = "last settled"
		}
		p.line("", "%s per socket ((%s - before) / %d sockets)", bytesIEC(s.PerSocket), after, s.Sockets)
	}
}

// configJSON writes a config struct as a JSON object of its fields in
// order, named by their report tags, with time.Duration fields in seconds
// (their names end in _s). The tags are not json tags so that decoding a
// report into the config type (as the tests do) leaves the durations alone.
func configJSON(cfg any) ([]byte, error) {
	v := reflect.ValueOf(cfg)
	b := []byte{'{'}
	for i, f := range reflect.VisibleFields(v.Type()) {
		x := v.FieldByIndex(f.Index).Interface()
		if d, ok := x.(time.Duration); ok {
			x = d.Seconds()
		}
		name, err := json.Marshal(f.Tag.Get("report"))
		if err != nil {
			return nil, err
		}
		value, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", f.Name, err)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(append(append(b, name...), ':'), value...)
	}
	return append(b, '}'), nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// newServerRSS returns one entry per -pid, in -url order.
func newServerRSS(t *target) []serverRSS {
	if len(t.pids) == 0 {
		return nil
	}
	out := make([]serverRSS, len(t.pids))
	for i, pid := range t.pids {
		out[i] = serverRSS{PID: pid, URL: t.urls[i].String()}
	}
	return out
}

// countSockets sets each server's number of connected sockets.
func countSockets(servers []serverRSS, clients []*client) {
	for _, c := range clients {
		if c != nil && c.server < len(servers) {
			servers[c.server].Sockets++
		}
	}
}

func urlStrings(t *target) []string {
	out := make([]string, len(t.urls))
	for i, u := range t.urls {
		out[i] = u.String()
	}
	return out
}

func urlList(t *target) string { return joinComma(urlStrings(t)) }

func joinComma(s []string) string { return strings.Join(s, ", ") }

// joinFloats lists seconds with two decimals, comma-separated.
func joinFloats(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return joinComma(parts)
}

func interrupted(yes bool) string {
	if yes {
		return " (INTERRUPTED)"
	}
	return ""
}

// toolUsage is what wsbench itself used. It shares the machine with the
// server: a tool near 100% of a core per GOMAXPROCS is limiting the run.
type toolUsage struct {
	CPUSeconds  float64 `json:"cpu_seconds"`
	WallSeconds float64 `json:"wall_seconds"`
	CPUPercent  float64 `json:"cpu_pct_of_one_core"`
	MaxRSS      int64   `json:"max_rss_bytes"`
}

// usageMeter measures wsbench's own CPU over a run.
type usageMeter struct {
	cpu   time.Duration
	start time.Time
}

func startUsage() usageMeter {
	cpu, _ := selfUsage()
	return usageMeter{cpu: cpu, start: time.Now()}
}

func (m usageMeter) stop() toolUsage {
	cpu, maxRSS := selfUsage()
	used, wall := cpu-m.cpu, time.Since(m.start)
	return toolUsage{
		CPUSeconds:  used.Seconds(),
		WallSeconds: wall.Seconds(),
		CPUPercent:  100 * rate(int64(used), wall) / float64(time.Second),
		MaxRSS:      maxRSS,
	}
}

func (p *printer) tool(u toolUsage, extra string) {
	p.line("wsbench", "cpu %.2fs over %.2fs (%.0f%% of one core%s), max rss %s",
		u.CPUSeconds, u.WallSeconds, u.CPUPercent, extra, bytesIEC(float64(u.MaxRSS)))
}

// tail prints the end of every report: errors, servers' memory and
// wsbench's own use, extra following its CPU share.
func (p *printer) tail(t runTail, extra string) {
	p.errors(t.Errors)
	p.servers(t.Servers)
	p.tool(t.Tool, extra)
}
