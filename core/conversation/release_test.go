package conversation_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
)

// A thread lock whose release fails when the answer ends (Redis away) is
// released later, in the background, so that the thread does not answer
// thread_busy for the rest of the lease's TTL once the lock is reachable
// again. These tests run in testing/synctest bubbles: the backoff's waits
// take no real time, and synctest.Wait returns once every retry is asleep.

const releaseTTL = 30 * time.Second

// releaseHarness is a harness whose lock fails its next fails releases
// (-1: every one).
func releaseHarness(t *testing.T, fails int) *harness {
	t.Helper()
	h, err := newHarness([]script{{pieces: []string{"Answer."}}, {pieces: []string{"Again."}}}, false, 0,
		func(c *conversation.Config) { c.LockTTL = releaseTTL })
	require.NoError(t, err)
	h.lock.releaseFails = fails
	return h
}

// answered runs a chat and checks that the client got the whole answer and
// end, whatever the lock did after.
func answered(t *testing.T, h *harness, message string) {
	t.Helper()
	var s sink
	_, err := h.conv.Run(context.Background(), chat(message), s.emit)
	require.NoError(t, err)
	assert.Equal(t, []conversation.EventKind{started, tokens, end}, s.kinds())
}

func (l *fakeLock) counts() (tries, renewed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.releaseTries, l.renewed
}

func TestGraphRetriesAFailedRelease(t *testing.T) {
	tests := []struct {
		name  string
		fails int
		// after is how long, from the end of the answer, the test waits.
		after time.Duration
		// held says whether the thread is still locked then.
		held bool
		// tries is how many releases were tried by then; -1 checks only
		// that they stopped.
		tries int
	}{
		{name: "released once the lock answers again", fails: 3, after: releaseTTL / 10, held: false, tries: 4},
		{name: "released at once when the lock answers", fails: 0, after: releaseTTL / 10, held: false, tries: 1},
		{name: "given up when the lease has expired by itself", fails: -1, after: releaseTTL + time.Minute, held: true, tries: -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := releaseHarness(t, tt.fails)
				answered(t, h, "hi")
				_, renewed := h.lock.counts()

				time.Sleep(tt.after)
				synctest.Wait()
				tries, renewedAfter := h.lock.counts()
				assert.Equal(t, tt.held, h.lock.isHeld(thread))
				assert.Equal(t, renewed, renewedAfter, "the lease is not renewed once the run has ended")
				if tt.tries >= 0 {
					assert.Equal(t, tt.tries, tries)
				} else {
					assert.Greater(t, tries, 1, "the release was retried")
				}

				// No retry outlives the lease: a day later nothing more
				// was tried (and the bubble ends with no goroutine left).
				time.Sleep(24 * time.Hour)
				synctest.Wait()
				triesLater, _ := h.lock.counts()
				assert.Equal(t, tries, triesLater, "the retries stopped")
			})
		})
	}
}

// TestGraphNextMessageAfterAFailedRelease: the client that saw end sends
// its next message once the lock is reachable again, well within the
// lease's TTL, and it is answered rather than refused with thread_busy.
func TestGraphNextMessageAfterAFailedRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := releaseHarness(t, 2)
		answered(t, h, "hi")
		assert.True(t, h.lock.isHeld(thread), "the release failed when the answer ended")

		time.Sleep(releaseTTL / 10)
		answered(t, h, "thanks")

		th, err := h.store.Load(context.Background(), thread)
		require.NoError(t, err)
		assert.Len(t, th.Messages, 4, "both turns are stored")
	})
}

// TestCloseStopsReleaseRetries: at shutdown the retries end at once (the
// lease expires by itself) instead of holding the process for the rest of
// its TTL, and a release that fails after Close is not retried.
func TestCloseStopsReleaseRetries(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		name := map[bool]string{false: "retries under way", true: "a release failing after Close"}[closeFirst]
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := releaseHarness(t, -1)
				if closeFirst {
					h.conv.Close()
				}
				answered(t, h, "hi")
				time.Sleep(time.Second)
				synctest.Wait()

				closing := time.Now()
				h.conv.Close()
				assert.Equal(t, closing, time.Now(), "Close waited for nothing but the retries' ends")
				tries, _ := h.lock.counts()
				if closeFirst {
					assert.Equal(t, 1, tries, "not retried")
				} else {
					assert.Greater(t, tries, 1, "retried until Close")
				}
				time.Sleep(24 * time.Hour)
				synctest.Wait()
				triesLater, _ := h.lock.counts()
				assert.Equal(t, tries, triesLater, "nothing was tried after Close")
				h.conv.Close() // idempotent
			})
		})
	}
}
