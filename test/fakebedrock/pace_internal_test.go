package fakebedrock

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowWriter records when each delta frame is written, and takes late
// (virtual) time to write the delta after the one that contains lateAfter.
type slowWriter struct {
	*httptest.ResponseRecorder
	lateAfter string
	late      time.Duration
	at        []time.Time
}

func (w *slowWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "contentBlockDelta") {
		w.at = append(w.at, time.Now())
		if strings.Contains(string(p), w.lateAfter) {
			time.Sleep(w.late)
		}
	}
	return w.ResponseRecorder.Write(p)
}

func (w *slowWriter) Flush() { w.ResponseRecorder.Flush() }

// TestStreamPaceKeepsItsClock: a delta sent late does not delay the ones
// after it, as a model generating at a steady rate would not.
func TestStreamPaceKeepsItsClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pace = 20 * time.Millisecond
		s := &Server{closed: make(chan struct{})}
		w := &slowWriter{ResponseRecorder: httptest.NewRecorder(), lateAfter: `"b"`, late: 33 * time.Millisecond}
		start := time.Now()
		gone := s.stream(context.Background(), w, Script{Deltas: []string{"a", "b", "c", "d", "e"}, Pace: pace}, Usage{}, nil)
		require.False(t, gone)
		assert.Equal(t, http.StatusOK, w.Code)

		want := []time.Time{
			start,
			start.Add(pace),
			start.Add(pace + 33*time.Millisecond), // due at 40 ms, late
			start.Add(3 * pace),
			start.Add(4 * pace),
		}
		assert.Equal(t, want, w.at)
	})
}
