package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
)

// presenceConfig is a development server's configuration with quick
// presence events: diffs every 100 ms and the given leave grace.
func presenceConfig(t *testing.T, id, redisURL string, grace time.Duration, maxMembers int) config.Config {
	t.Helper()
	cfg := defaults(t)
	cfg.InstanceID = id
	cfg.Store.RedisURL = redisURL
	if redisURL != "" {
		cfg.Store.PresenceTTL = 1500 * time.Millisecond
	}
	cfg.Presence.DiffInterval = 100 * time.Millisecond
	cfg.Presence.LeaveGrace = grace
	cfg.Presence.EventsMax = maxMembers
	return cfg
}

// hello opens a session socket on in with the given hello fields after
// user_type, and returns it with its connection id.
func hello(t *testing.T, in *instance, session, fields string) (*client, string) {
	t.Helper()
	c := dial(t, in, "/ws/session/"+session+"/?authorization="+apiKey)
	c.send(`{"type":"hello","user_type":"user","client_type":"web"` + fields + `}`)
	ok := c.next()
	require.Equal(t, "hello_ok", ok["type"], "%v", ok)
	return c, ok["connection_id"].(string)
}

// listen opens a presence-event listener and returns it with its
// presence_state.
func listen(t *testing.T, in *instance, session string) (*client, map[string]any) {
	t.Helper()
	c, _ := hello(t, in, session, `,"presence_events":true`)
	state := c.next()
	require.Equal(t, "presence_state", state["type"], "the state comes right after hello_ok: %v", state)
	return c, state
}

// memberWithKey opens a plain member with a presence key.
func memberWithKey(t *testing.T, in *instance, session, key string) (*client, string) {
	t.Helper()
	return hello(t, in, session, fmt.Sprintf(`,"presence_key":%q`, key))
}

// closeClean closes c with 1000, as a client that leaves does.
func closeClean(t *testing.T, c *client) {
	t.Helper()
	require.NoError(t, c.Conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(time.Second)))
	<-c.Done
}

// drop cuts c's connection without a close, as a lost network does.
func drop(c *client) {
	_ = c.Conn.NetConn().Close()
	<-c.Done
}

// presenceDiff is one presence_diff, by member names: the presence_key,
// or the connection id of a member without one.
type presenceDiff struct {
	joins, leaves []string
	count         int
	countOnly     bool
}

func names(v any) []string {
	out := []string{}
	for _, x := range v.([]any) {
		m := x.(map[string]any)
		if k, ok := m["presence_key"].(string); ok {
			out = append(out, k)
		} else {
			out = append(out, m["connection_id"].(string))
		}
	}
	return out
}

// diffsUntil reads l's presence diffs until one satisfies done, and
// returns them all.
func diffsUntil(t *testing.T, l *client, done func(presenceDiff) bool) []presenceDiff {
	t.Helper()
	var all []presenceDiff
	for {
		m := l.nextOf("presence_diff")
		d := presenceDiff{joins: names(m["joins"]), leaves: names(m["leaves"]), count: int(m["count"].(float64)), countOnly: m["count_only"].(bool)}
		all = append(all, d)
		if done(d) {
			return all
		}
	}
}

func joined(name string) func(presenceDiff) bool {
	return func(d presenceDiff) bool { return contains(d.joins, name) }
}

func left(name string) func(presenceDiff) bool {
	return func(d presenceDiff) bool { return contains(d.leaves, name) }
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// sentinel joins a member on in, waits for l to be told, closes it
// cleanly and waits again; it returns every diff l got meanwhile. What was
// to be told before it was told by then: diffs are batched in order.
func sentinel(t *testing.T, in *instance, session string, l *client) []presenceDiff {
	t.Helper()
	c, id := hello(t, in, session, "")
	diffs := diffsUntil(t, l, joined(id))
	closeClean(t, c)
	return append(diffs, diffsUntil(t, l, left(id))...)
}

// count counts the diffs that join (or leave) name.
func count(diffs []presenceDiff, name string, leaves bool) int {
	n := 0
	for _, d := range diffs {
		xs := d.joins
		if leaves {
			xs = d.leaves
		}
		if contains(xs, name) {
			n++
		}
	}
	return n
}

// TestPresenceEvents runs the events on one instance in memory, and on two
// instances sharing Redis with the listener on one and the members on the
// other.
func TestPresenceEvents(t *testing.T) {
	setups := []struct {
		name  string
		start func(t *testing.T) (listenOn, othersOn *instance)
	}{
		{"memory", func(t *testing.T) (*instance, *instance) {
			t.Helper()
			in := start(t, presenceConfig(t, "m", "", time.Minute, 100))
			return in, in
		}},
		{"redis, two instances", func(t *testing.T) (*instance, *instance) {
			t.Helper()
			return start(t, presenceConfig(t, "a", servers.Redis.URL(), time.Minute, 100)),
				start(t, presenceConfig(t, "b", servers.Redis.URL(), time.Minute, 100))
		}},
		{"redis, two instances, sharded pub/sub", func(t *testing.T) (*instance, *instance) {
			t.Helper()
			a, b := presenceConfig(t, "a", servers.Redis.URL(), time.Minute, 100), presenceConfig(t, "b", servers.Redis.URL(), time.Minute, 100)
			a.Store.ShardedPubSubPartitions, b.Store.ShardedPubSubPartitions = 4, 4
			return start(t, a), start(t, b)
		}},
	}
	for _, setup := range setups {
		t.Run(setup.name, func(t *testing.T) {
			here, there := setup.start(t)
			s := uniqueSession(t)
			l, state := listen(t, here, s)
			assert.InDelta(t, 1, state["count"], 0, "the listener itself")

			// A member with a key joins on the other instance.
			x, _ := memberWithKey(t, there, s, "ann")
			diffsUntil(t, l, joined("ann"))

			// Its network drops, and it comes back on this instance
			// within the grace (a minute): nobody is told it left. A
			// sentinel that joins and leaves cleanly after each step
			// shows that the diffs up to then hold nothing of ann.
			drop(x)
			diffs := sentinel(t, there, s, l)
			x2, _ := memberWithKey(t, here, s, "ann")
			diffs = append(diffs, sentinel(t, there, s, l)...)
			assert.Zero(t, count(diffs, "ann", true), "ann's drop was told: %+v", diffs)
			assert.Zero(t, count(diffs, "ann", false), "ann joined twice: %+v", diffs)

			// A clean close (1000) leaves at once, grace or not.
			closeClean(t, x2)
			d := diffsUntil(t, l, left("ann"))
			assert.Equal(t, 1, d[len(d)-1].count)

			// Two tabs of one key are one member.
			tab1, _ := memberWithKey(t, there, s, "bob")
			tab2, _ := memberWithKey(t, here, s, "bob")
			diffsUntil(t, l, joined("bob"))
			closeClean(t, tab1)
			diffs = sentinel(t, there, s, l)
			assert.Zero(t, count(diffs, "bob", true), "bob left with a tab still open: %+v", diffs)
			closeClean(t, tab2)
			diffsUntil(t, l, left("bob"))
		})
	}
}

func TestPresenceEventsDropLeavesAfterTheGrace(t *testing.T) {
	in := start(t, presenceConfig(t, "m", "", 300*time.Millisecond, 100))
	s := uniqueSession(t)
	l, _ := listen(t, in, s)
	x, _ := memberWithKey(t, in, s, "ann")
	diffsUntil(t, l, joined("ann"))
	drop(x)
	d := diffsUntil(t, l, left("ann"))
	assert.Equal(t, 1, d[len(d)-1].count)
}

func TestPresenceEventsCountOnlyAboveTheMax(t *testing.T) {
	in := start(t, presenceConfig(t, "m", "", time.Minute, 2))
	s := uniqueSession(t)
	l, _ := listen(t, in, s)
	a, aid := hello(t, in, s, "")
	diffsUntil(t, l, joined(aid))

	b, _ := hello(t, in, s, "")
	d := diffsUntil(t, l, func(d presenceDiff) bool { return d.countOnly })
	last := d[len(d)-1]
	assert.Equal(t, 3, last.count)
	assert.Empty(t, last.joins)
	assert.Empty(t, last.leaves)

	// Back to the max: the whole state again.
	closeClean(t, b)
	state := l.nextOf("presence_state")
	assert.InDelta(t, 2, state["count"], 0)
	assert.Equal(t, false, state["count_only"])
	assert.Len(t, state["connections"], 2)
	closeClean(t, a)
	diffsUntil(t, l, left(aid))
}

// TestPresenceEventsOfADeadInstance cuts one of three instances off Redis
// for good: to the other two it died without goodbye. A listener on each
// survivor is told its member's leave exactly once.
func TestPresenceEventsOfADeadInstance(t *testing.T) {
	cut := newCuttable(t, servers.Redis.URL())
	a := start(t, presenceConfig(t, "a", servers.Redis.URL(), 500*time.Millisecond, 100))
	b := start(t, presenceConfig(t, "b", cut.url, 500*time.Millisecond, 100))
	c := start(t, presenceConfig(t, "c", servers.Redis.URL(), 500*time.Millisecond, 100))
	s := uniqueSession(t)
	la, _ := listen(t, a, s)
	lc, _ := listen(t, c, s)
	memberWithKey(t, b, s, "doomed")
	diffsUntil(t, la, joined("doomed"))
	diffsUntil(t, lc, joined("doomed"))

	cut.cut()
	for _, l := range []*client{la, lc} {
		diffsUntil(t, l, left("doomed"))
	}
	// Nothing more of it: a sentinel's join and leave come next.
	_, sid := hello(t, a, s, "")
	for _, l := range []*client{la, lc} {
		diffs := diffsUntil(t, l, joined(sid))
		assert.Zero(t, count(diffs, "doomed", true), "a second leave: %+v", diffs)
		assert.Zero(t, count(diffs, "doomed", false), "it came back: %+v", diffs)
	}
}
