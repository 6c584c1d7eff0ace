package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// What issue 15 measures of a chat run besides the client's latencies:
// how much of the first token's wait the server adds to the model's, and
// what the guardrail costs per answer.
//
// The server's added part is the first token's arrival minus
// session_started's, minus the model's own time to its first token
// (-model-first-token, which the bench is told: 0 for the local model and
// for test/fakebedrock, which both give their first piece as soon as they
// are asked). session_started goes out when the thread is locked, right
// before the thread's load, the escalation check and the model call: on
// the memory store with the local escalation rules those take well under
// a millisecond, so what remains is the guardrail's hold on the first
// chunk and the server's own work. Both messages travel the same socket,
// so the network's share cancels out.
//
// The guardrail's cost comes from the servers' /metrics
// (wsserver_guardrail_checks_total, wsserver_guardrail_checked_chars_total)
// read before and after the chats, divided by the chats that ended. Other
// chats on the same servers would count too; a server without the
// counters (or unreachable) reports none.

// guardrailReport is what the guardrail did during the run, from the
// servers' counters.
type guardrailReport struct {
	Calls        float64 `json:"calls"`
	Chars        float64 `json:"chars"`
	CallsPerChat float64 `json:"calls_per_chat"`
	CharsPerChat float64 `json:"chars_per_chat"`
}

// guardrailCounters are the sums of the guardrail's counters over the
// servers.
type guardrailCounters struct{ calls, chars float64 }

// scrapeGuardrail reads the guardrail's counters of every server of t; ok
// is false when one could not be read or has none.
func scrapeGuardrail(ctx context.Context, t *target) (c guardrailCounters, ok bool) {
	for i := range t.urls {
		calls, chars, found, err := scrapeOne(ctx, metricsURL(t, i))
		if err != nil || !found {
			return c, false
		}
		c.calls += calls
		c.chars += chars
	}
	return c, true
}

// metricsURL is server i's /metrics over HTTP.
func metricsURL(t *target, i int) string {
	u := *t.urls[i]
	switch u.Scheme {
	case "wss":
		u.Scheme = "https"
	default:
		u.Scheme = "http"
	}
	u.Path = "/metrics"
	u.RawQuery = ""
	return u.String()
}

func scrapeOne(ctx context.Context, url string) (calls, chars float64, found bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, false, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, false, fmt.Errorf("%s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		metric, _, _ := strings.Cut(name, "{")
		switch metric {
		case "wsserver_guardrail_checks_total":
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return 0, 0, false, err
			}
			calls += v
			found = true
		case "wsserver_guardrail_checked_chars_total":
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return 0, 0, false, err
			}
			chars += v
			found = true
		}
	}
	return calls, chars, found, sc.Err()
}

// guardrailPerChat is what the counters moved by from before to after,
// per ended chat; nil when either read failed.
func guardrailPerChat(before, after guardrailCounters, okBefore, okAfter bool, ended int64) *guardrailReport {
	if !okBefore || !okAfter {
		return nil
	}
	g := &guardrailReport{Calls: after.calls - before.calls, Chars: after.chars - before.chars}
	if ended > 0 {
		g.CallsPerChat = round2(g.Calls / float64(ended))
		g.CharsPerChat = round2(g.Chars / float64(ended))
	}
	return g
}

func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// printIssue15 prints the server's added part of the first token and the
// guardrail's cost.
func (r *chatReport) printIssue15(p *printer, sampled string) {
	p.latency("tok-start", r.FirstAdded, fmt.Sprintf("%s; first token - session_started - model's first token (%s): the server's added part",
		sampled, r.Config.ModelFirstToken))
	if g := r.Guardrail; g != nil {
		p.line("guardrail", "%.0f calls, %.0f chars; per ended chat: %.2f calls, %.1f chars (servers' /metrics)",
			g.Calls, g.Chars, g.CallsPerChat, g.CharsPerChat)
	} else {
		p.line("guardrail", "no counters (a server's /metrics unreadable or without wsserver_guardrail_*)")
	}
}
