package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestScrapeGuardrail(t *testing.T) {
	page := "# HELP wsserver_guardrail_checks_total x\n# TYPE wsserver_guardrail_checks_total counter\n" +
		"wsserver_guardrail_checks_total{outcome=\"pass\"} 7\nwsserver_guardrail_checks_total{outcome=\"fail\"} 2\n" +
		"wsserver_guardrail_checked_chars_total 1234\nwsserver_sockets_open{endpoint=\"chat\"} 3\n"
	var hits int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path != "/metrics" || r.URL.RawQuery != "" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte(page))
	}))
	defer srv.Close()
	u, err := url.Parse("ws" + srv.URL[len("http"):])
	if err != nil {
		t.Fatal(err)
	}
	two := &target{urls: []*url.URL{u, u}, key: "secret"}
	c, ok := scrapeGuardrail(t.Context(), two)
	if !ok || c.calls != 18 || c.chars != 2468 || hits != 2 {
		t.Fatalf("scrape = %+v, %v after %d reads; want 18 calls, 2468 chars from both servers", c, ok, hits)
	}
	g := guardrailPerChat(guardrailCounters{calls: 8, chars: 468}, c, true, true, 4)
	if g == nil || g.Calls != 10 || g.CallsPerChat != 2.5 || g.CharsPerChat != 500 {
		t.Fatalf("per chat = %+v; want 10 calls, 2.5 and 500 per chat", g)
	}
	if guardrailPerChat(c, c, true, false, 4) != nil {
		t.Fatal("a failed read must report no counters")
	}

	page = "wsserver_sockets_open{endpoint=\"chat\"} 3\n"
	if _, ok := scrapeGuardrail(t.Context(), two); ok {
		t.Fatal("a server without the counters reports none")
	}
	srv.Close()
	if _, ok := scrapeGuardrail(t.Context(), two); ok {
		t.Fatal("an unreachable server reports none")
	}
}
