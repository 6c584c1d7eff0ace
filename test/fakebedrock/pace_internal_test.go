package fakebedrock

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wsserver/wsserver/test/internal/fakemodel"
	"github.com/wsserver/wsserver/test/internal/fakemodel/fakemodeltest"
)

// TestStreamPaceKeepsItsClock: a delta sent late does not delay the ones
// after it, as a model generating at a steady rate would not.
func TestStreamPaceKeepsItsClock(t *testing.T) {
	fakemodeltest.CheckPace(t, func(ctx context.Context, w http.ResponseWriter, deltas []string, pace time.Duration) bool {
		s := &Server{}
		s.calls, _ = fakemodel.New[Script, Request](fakemodel.Config[Script]{}, nil)
		return s.stream(ctx, w, Script{Deltas: deltas, Pace: pace}, Usage{}, nil)
	}, func(p string) bool { return strings.Contains(p, "contentBlockDelta") })
}
