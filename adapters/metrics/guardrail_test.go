package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/metrics"
	"github.com/wsserver/wsserver/ports"
)

// badWords fails texts with "bad", errs on texts with "err".
type badWords struct{}

func (badWords) WholeAnswer() bool { return true }

func (badWords) Check(_ context.Context, text string) (ports.Verdict, error) {
	switch {
	case strings.Contains(text, "err"):
		return ports.Verdict{}, errors.New("guardrail away")
	case strings.Contains(text, "bad"):
		return ports.Verdict{Reason: "bad"}, nil
	}
	return ports.Verdict{Pass: true}, nil
}

func TestGuardrailCountsChecksAndCharacters(t *testing.T) {
	m := metrics.New()
	assert.Contains(t, scrapeText(t, m), `wsserver_guardrail_checks_total{outcome="fail"} 0`, "at 0 before the first check")
	g := m.Guardrail(badWords{})
	assert.True(t, g.WholeAnswer(), "the guardrail's own mode")
	for _, tt := range []struct {
		text string
		pass bool
		err  bool
	}{
		{text: "fine.", pass: true},
		{text: " ça va.", pass: true},
		{text: " bad.", pass: false},
		{text: " err", err: true},
	} {
		v, err := g.Check(context.Background(), tt.text)
		if tt.err {
			require.Error(t, err)
			continue
		}
		require.NoError(t, err)
		assert.Equal(t, tt.pass, v.Pass, "the verdict is the guardrail's")
	}
	assert.InDelta(t, 2, scrape(t, m, `wsserver_guardrail_checks_total{outcome="pass"}`), 0)
	assert.InDelta(t, 1, scrape(t, m, `wsserver_guardrail_checks_total{outcome="fail"}`), 0)
	assert.InDelta(t, 1, scrape(t, m, `wsserver_guardrail_checks_total{outcome="error"}`), 0)
	assert.InDelta(t, 5+7+5+4, scrape(t, m, `wsserver_guardrail_checked_chars_total`), 0, "characters, not bytes")
}

func scrapeText(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}
