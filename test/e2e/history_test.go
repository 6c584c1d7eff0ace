package e2e

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
)

// The session history (PROTOCOL.md §4.8), on one instance without Redis
// and on two instances sharing Redis: a listener that comes back with
// since gets exactly what it missed, in order, then the live broadcasts.

// historySetup makes the instances of one case: where the sender is, and
// where the listener first is and then comes back. With Redis they are
// different instances.
type historySetup struct {
	name  string
	start func(t *testing.T, size int, ttl time.Duration) (sender, first, back *instance)
}

var historySetups = []historySetup{
	{"memory", func(t *testing.T, size int, ttl time.Duration) (*instance, *instance, *instance) {
		t.Helper()
		cfg := defaults(t)
		withHistory(&cfg, size, ttl)
		in := start(t, cfg)
		return in, in, in
	}},
	{"redis, two instances", func(t *testing.T, size int, ttl time.Duration) (*instance, *instance, *instance) {
		t.Helper()
		a, b := defaults(t), defaults(t)
		a.InstanceID, b.InstanceID = "a", "b"
		a.Store.RedisURL, b.Store.RedisURL = servers.Redis.URL(), servers.Redis.URL()
		withHistory(&a, size, ttl)
		withHistory(&b, size, ttl)
		ia, ib := start(t, a), start(t, b)
		return ia, ib, ia
	}},
}

func withHistory(cfg *config.Config, size int, ttl time.Duration) {
	cfg.Store.SessionHistorySize = size
	// Set here, below what SESSION_HISTORY_TTL accepts, to see expiry.
	cfg.Store.SessionHistoryTTL = ttl
}

// helloSince opens a session socket and says hello with since (a JSON value, or
// "" for none), returning the client and its hello_ok.
func helloSince(t *testing.T, in *instance, session, userType, since string) (*client, map[string]any) {
	t.Helper()
	c := dial(t, in, "/ws/session/"+session+"/?authorization="+apiKey)
	msg := fmt.Sprintf(`{"type":"hello","user_type":%q,"client_type":"web"`, userType)
	if since != "" {
		msg += `,"since":` + since
	}
	c.send(msg + "}")
	ok := c.next()
	require.Equal(t, "hello_ok", ok["type"], "%v", ok)
	return c, ok
}

func sinceOf(offset float64, epoch any) string {
	return fmt.Sprintf(`{"offset":%d,"epoch":%q}`, int64(offset), epoch)
}

// broadcast sends msgs from c and waits until c got each back.
func broadcast(t *testing.T, c *client, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		c.send(fmt.Sprintf(`{"type":"broadcast","msg":%q}`, m))
	}
	for _, m := range msgs {
		require.Equal(t, m, c.nextOf("session_message")["msg"])
	}
}

// leave closes c and waits until the server saw it go.
func leave(t *testing.T, c *client) {
	t.Helper()
	require.NoError(t, c.Conn.Close())
	<-c.Done
}

// expect reads the next messages of c: session_messages with msgs, and
// offsets from first on.
func expect(t *testing.T, c *client, first float64, msgs ...string) {
	t.Helper()
	for i, m := range msgs {
		got := c.next()
		require.Equal(t, "session_message", got["type"], "%v", got)
		assert.Equal(t, m, got["msg"])
		assert.InDelta(t, first+float64(i), got["offset"], 0, "%v", got)
	}
}

func TestSessionHistoryRecoversWhatWasMissed(t *testing.T) {
	for _, setup := range historySetups {
		t.Run(setup.name, func(t *testing.T) {
			sender, first, back := setup.start(t, 100, time.Minute)
			s := uniqueSession(t)
			from, welcome := helloSince(t, sender, s, "admin", "")
			assert.InDelta(t, 0, welcome["offset"], 0, "a new session is at 0")
			epoch := welcome["epoch"]
			require.NotEmpty(t, epoch)
			assert.NotContains(t, welcome, "recovered", "no since, no recovered")

			listener, ok := helloSince(t, first, s, "agent", "")
			assert.Equal(t, epoch, ok["epoch"], "one epoch on every instance")
			broadcast(t, from, "m1", "m2")
			expect(t, listener, 1, "m1", "m2")
			leave(t, listener)

			broadcast(t, from, "m3", "m4", "m5")
			listener, ok = helloSince(t, back, s, "agent", sinceOf(2, epoch))
			assert.Equal(t, true, ok["recovered"])
			assert.InDelta(t, 5, ok["offset"], 0)
			assert.Equal(t, epoch, ok["epoch"])
			expect(t, listener, 3, "m3", "m4", "m5")
			broadcast(t, from, "m6")
			expect(t, listener, 6, "m6")

			// Back with nothing missed: recovered, nothing replayed.
			leave(t, listener)
			listener, ok = helloSince(t, first, s, "agent", sinceOf(6, epoch))
			assert.Equal(t, true, ok["recovered"])
			broadcast(t, from, "m7")
			expect(t, listener, 7, "m7")
		})
	}
}

// TestSessionHistoryRejoinWhileBroadcasting: a listener comes back while
// broadcasts keep coming; it gets every one after its since once, in
// order, whichever side of its join they fell on.
func TestSessionHistoryRejoinWhileBroadcasting(t *testing.T) {
	for _, setup := range historySetups {
		t.Run(setup.name, func(t *testing.T) {
			sender, first, back := setup.start(t, 1000, time.Minute)
			s := uniqueSession(t)
			from, welcome := helloSince(t, sender, s, "admin", "")
			epoch := welcome["epoch"]
			listener, _ := helloSince(t, first, s, "agent", "")
			broadcast(t, from, "0")
			expect(t, listener, 1, "0")
			leave(t, listener)

			// 150 broadcasts (within the rate limit's burst), the rejoin
			// in the middle of them.
			const n = 150
			rejoining := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; i <= n; i++ {
					if i == n/3 {
						<-rejoining
					}
					from.Send(t, fmt.Sprintf(`{"type":"broadcast","msg":"%d"}`, i))
				}
			}()
			close(rejoining)
			listener, ok := helloSince(t, back, s, "agent", sinceOf(1, epoch))
			require.Equal(t, true, ok["recovered"], "%v", ok)
			wg.Wait()
			want := make([]string, n)
			for i := range want {
				want[i] = fmt.Sprint(i + 1)
			}
			expect(t, listener, 2, want...)
			for _, m := range want { // the sender's own copies
				require.Equal(t, m, from.nextOf("session_message")["msg"])
			}
			broadcast(t, from, "after")
			expect(t, listener, n+2, "after")
		})
	}
}

func TestSessionHistoryThatCannotBeFilled(t *testing.T) {
	for _, setup := range historySetups {
		t.Run(setup.name+", trimmed", func(t *testing.T) {
			sender, first, back := setup.start(t, 5, time.Minute)
			s := uniqueSession(t)
			from, welcome := helloSince(t, sender, s, "admin", "")
			epoch := welcome["epoch"]
			listener, _ := helloSince(t, first, s, "agent", "")
			broadcast(t, from, "m1")
			expect(t, listener, 1, "m1")
			leave(t, listener)
			broadcast(t, from, "m2", "m3", "m4", "m5", "m6", "m7") // 6 missed, 5 kept

			listener, ok := helloSince(t, back, s, "agent", sinceOf(1, epoch))
			assert.Equal(t, false, ok["recovered"])
			assert.InDelta(t, 7, ok["offset"], 0, "where the session stands")
			assert.Equal(t, epoch, ok["epoch"])
			broadcast(t, from, "m8")
			expect(t, listener, 8, "m8") // nothing replayed: the next is live

			// One fewer missed is recovered.
			leave(t, listener)
			broadcast(t, from, "m9", "m10", "m11", "m12")
			listener, ok = helloSince(t, back, s, "agent", sinceOf(7, epoch))
			assert.Equal(t, true, ok["recovered"])
			expect(t, listener, 8, "m8", "m9", "m10", "m11", "m12")
		})
		t.Run(setup.name+", expired", func(t *testing.T) {
			const ttl = 500 * time.Millisecond
			sender, _, back := setup.start(t, 100, ttl)
			s := uniqueSession(t)
			from, welcome := helloSince(t, sender, s, "admin", "")
			epoch := welcome["epoch"]
			broadcast(t, from, "m1", "m2")
			leave(t, from)
			// Nothing may touch the session until its TTL surely passed:
			// the wait is on the clock, as expiry is.
			for left := time.Now(); time.Since(left) < 3*ttl; {
				time.Sleep(ttl)
			}
			listener, ok := helloSince(t, back, s, "agent", sinceOf(1, epoch))
			assert.Equal(t, false, ok["recovered"])
			assert.NotEqual(t, epoch, ok["epoch"], "a new epoch")
			assert.InDelta(t, 0, ok["offset"], 0)
			broadcast(t, listener, "new")
		})
		t.Run(setup.name+", another epoch", func(t *testing.T) {
			sender, _, back := setup.start(t, 100, time.Minute)
			s := uniqueSession(t)
			from, _ := helloSince(t, sender, s, "admin", "")
			broadcast(t, from, "m1")
			_, ok := helloSince(t, back, s, "agent", sinceOf(0, "not-this-one"))
			assert.Equal(t, false, ok["recovered"])
			assert.InDelta(t, 1, ok["offset"], 0)
		})
	}
}

// TestSessionWithoutHistoryIsAsBefore: with the default settings nothing
// carries an offset, and a hello with since is told it was not recovered.
func TestSessionWithoutHistoryIsAsBefore(t *testing.T) {
	in := start(t, defaults(t))
	s := uniqueSession(t)
	plain, ok := helloSince(t, in, s, "admin", "")
	assert.Equal(t, []string{"connection_id", "session_id", "type"}, keys(ok))
	asked, ok := helloSince(t, in, s, "agent", sinceOf(3, "e1"))
	assert.Equal(t, false, ok["recovered"])
	assert.Equal(t, []string{"connection_id", "recovered", "session_id", "type"}, keys(ok))
	plain.send(`{"type":"broadcast","msg":"hi"}`)
	want := map[string]any{"type": "session_message", "user_type": "admin", "client_type": "web", "msg": "hi", "data": nil}
	assert.Equal(t, want, plain.next())
	assert.Equal(t, want, asked.next())
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
