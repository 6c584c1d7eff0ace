package socket

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestControlBudget(t *testing.T) {
	// The defaults: 10 a second, 100 at once.
	for _, tc := range []struct {
		name    string
		every   time.Duration // between two control frames
		frames  int
		allowed int
	}{
		{"a ping every 5 seconds for a day", 5 * time.Second, 17280, 17280},
		{"a ping and a pong a second for an hour", 500 * time.Millisecond, 7200, 7200},
		{"10 a second for an hour", 100 * time.Millisecond, 36000, 36000},
		{"100 at once", 0, 100, 100},
		{"a flood", 0, 100000, 100},
		{"20 a second for a minute", 50 * time.Millisecond, 1200, 100 + 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1e9, 0)
			b := newBucket(10, 100, start)
			allowed := 0
			for i := range tc.frames {
				if b.allow(start.Add(time.Duration(i) * tc.every)) {
					allowed++
				}
			}
			assert.InDelta(t, tc.allowed, allowed, 1)
		})
	}
}

func TestControlBudgetIgnoresAClockGoingBack(t *testing.T) {
	start := time.Unix(1e9, 0)
	b := newBucket(10, 1, start)
	assert.True(t, b.allow(start))
	assert.False(t, b.allow(start.Add(-time.Hour)))
	assert.True(t, b.allow(start.Add(100*time.Millisecond)))
}
