package session

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// reapingPresence is a fakePresence whose reaper hands out what the test
// puts in lost, once.
type reapingPresence struct {
	*fakePresence
	mu    sync.Mutex
	lost  map[string][]ports.Member
	reaps int
}

func (p *reapingPresence) Reap(context.Context) (map[string][]ports.Member, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reaps++
	lost := p.lost
	p.lost = nil
	return lost, nil
}

// presenceFrames returns the presence_state and presence_diff messages r
// got, decoded.
func presenceFrames(t *testing.T, r *recorder) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range r.frames() {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(f), &m))
		if m["type"] == "presence_state" || m["type"] == "presence_diff" {
			out = append(out, m)
		}
	}
	return out
}

// ids returns the connection ids of a joins, leaves or connections list.
func ids(v any) []string {
	out := []string{}
	for _, m := range v.([]any) {
		out = append(out, m.(map[string]any)["connection_id"].(string))
	}
	return out
}

type eventsHub struct {
	t        *testing.T
	hub      *Hub
	presence *reapingPresence
	broker   *fakeBroker
}

func newEventsHub(t *testing.T, rules PresenceRules) *eventsHub {
	t.Helper()
	p := &reapingPresence{fakePresence: newFakePresence()}
	b := newFakeBroker(true)
	h, err := NewHub(HubConfig{Broker: b, Presence: p, PresenceRules: rules, PresenceResync: time.Second})
	require.NoError(t, err)
	return &eventsHub{t: t, hub: h, presence: p, broker: b}
}

func (e *eventsHub) join(id, key string) *recorder {
	e.t.Helper()
	r := &recorder{}
	require.NoError(e.t, e.hub.Join(e.t.Context(), "s", ports.Member{ConnectionID: id, UserType: "user", PresenceKey: key}, r, EncodeHelloOK("s", id)))
	return r
}

func (e *eventsHub) listen(id string) *recorder {
	e.t.Helper()
	r := e.join(id, "")
	require.NoError(e.t, e.hub.Listen(e.t.Context(), "s", r))
	return r
}

func TestPresenceEvents(t *testing.T) {
	rules := PresenceRules{Interval: time.Second, Grace: 15 * time.Second, Max: 3}
	cases := []struct {
		name string
		run  func(t *testing.T, e *eventsHub, l *recorder)
		// want is the presence frames the listener l gets after its
		// presence_state: each as type, joins, leaves and count.
		want []string
	}{
		{"joins and leaves are batched", func(t *testing.T, e *eventsHub, l *recorder) { //nolint:thelper // a table body, run under t.Run
			b, c := e.join("b", ""), e.join("c", "")
			time.Sleep(time.Second)
			e.hub.Leave(t.Context(), "s", "b", b)
			e.hub.Leave(t.Context(), "s", "c", c)
			time.Sleep(time.Second)
		}, []string{"diff +[b c] -[] 3", "diff +[] -[b c] 1"}},

		{"a drop back within the grace is not told", func(t *testing.T, e *eventsHub, l *recorder) { //nolint:thelper // a table body, run under t.Run
			x := e.join("x", "ann")
			time.Sleep(time.Second)
			e.hub.Drop(t.Context(), "s", "x", x)
			time.Sleep(10 * time.Second)
			y := e.join("y", "ann")
			time.Sleep(30 * time.Second)
			e.hub.Leave(t.Context(), "s", "y", y)
			time.Sleep(time.Second)
		}, []string{"diff +[x] -[] 2", "diff +[] -[x] 1"}},

		{"a drop not back is told after the grace", func(t *testing.T, e *eventsHub, l *recorder) { //nolint:thelper // a table body, run under t.Run
			x := e.join("x", "ann")
			time.Sleep(time.Second)
			e.hub.Drop(t.Context(), "s", "x", x)
			time.Sleep(14 * time.Second)
			assert.Len(t, presenceFrames(t, l), 2, "told before the grace ended")
			time.Sleep(2 * time.Second)
		}, []string{"diff +[x] -[] 2", "diff +[] -[x] 1"}},

		{"above Max the count only, then the state again", func(t *testing.T, e *eventsHub, l *recorder) { //nolint:thelper // a table body, run under t.Run
			b, c, d := e.join("b", ""), e.join("c", ""), e.join("d", "")
			time.Sleep(time.Second)
			e.hub.Leave(t.Context(), "s", "b", b)
			time.Sleep(time.Second)
			_, _ = c, d
		}, []string{"diff +[] -[] 4 count_only", "state [a c d] 3"}},

		{"the leaves of a dead instance, announced once by its reaper", func(t *testing.T, e *eventsHub, l *recorder) { //nolint:thelper // a table body, run under t.Run
			gone := ports.Member{ConnectionID: "z", UserType: "user"}
			require.NoError(t, e.presence.Add(t.Context(), "s", gone))
			e.hub.announce(t.Context(), "s", encodeBusJoin(gone)) // as the dead instance did
			time.Sleep(time.Second)
			require.NoError(t, e.presence.Remove(t.Context(), "s", "z")) // the reaper removes them
			e.presence.mu.Lock()
			e.presence.lost = map[string][]ports.Member{"s": {gone}}
			e.presence.mu.Unlock()
			time.Sleep(20 * time.Second)
		}, []string{"diff +[z] -[] 2", "diff +[] -[z] 1"}},

		{"a resync mends a leave the events missed", func(t *testing.T, e *eventsHub, l *recorder) { //nolint:thelper // a table body, run under t.Run
			x := e.join("x", "")
			time.Sleep(time.Second)
			// x's instance lost its leave event: presence knows, the events not.
			e.broker.mu.Lock()
			e.broker.failPublish = true
			e.broker.mu.Unlock()
			require.NoError(t, e.presence.Remove(t.Context(), "s", "x"))
			_ = x
			time.Sleep(20 * time.Second)
		}, []string{"diff +[x] -[] 2", "diff +[] -[x] 1"}},

		{"when the broker fails the local listeners still learn", func(t *testing.T, e *eventsHub, l *recorder) { //nolint:thelper // a table body, run under t.Run
			e.broker.mu.Lock()
			e.broker.failPublish = true
			e.broker.mu.Unlock()
			b := e.join("b", "")
			time.Sleep(time.Second)
			e.hub.Leave(t.Context(), "s", "b", b)
			time.Sleep(time.Second)
		}, []string{"diff +[b] -[] 2", "diff +[] -[b] 1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newEventsHub(t, rules)
				ctx, stop := context.WithCancel(t.Context())
				done := make(chan struct{})
				go func() { e.hub.Run(ctx); close(done) }()
				l := e.listen("a")
				// Steps run half-way between the flushes, which come at
				// whole seconds: a flush and a step at the same instant
				// would run in either order.
				time.Sleep(500 * time.Millisecond)
				tc.run(t, e, l)
				synctest.Wait()

				frames := presenceFrames(t, l)
				require.NotEmpty(t, frames)
				assert.Equal(t, "state [a] 1", describe(frames[0]), "first the state")
				var got []string
				for _, f := range frames[1:] {
					got = append(got, describe(f))
				}
				assert.Equal(t, tc.want, got)
				stop()
				<-done
			})
		})
	}
}

func describe(f map[string]any) string {
	count := int(f["count"].(float64))
	var s string
	if f["type"] == "presence_state" {
		s = "state " + fmtIDs(ids(f["connections"])) + " " + itoa(count)
	} else {
		s = "diff +" + fmtIDs(ids(f["joins"])) + " -" + fmtIDs(ids(f["leaves"])) + " " + itoa(count)
	}
	if f["count_only"] == true {
		s += " count_only"
	}
	return s
}

func fmtIDs(ids []string) string {
	s := "["
	for i, id := range ids {
		if i > 0 {
			s += " "
		}
		s += id
	}
	return s + "]"
}

func itoa(n int) string { return string(appendInt(nil, n)) }

func TestListenersShareOneView(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEventsHub(t, PresenceRules{Interval: time.Second})
		first := e.listen("a")
		e.join("b", "")
		second := e.listen("c") // told what first was told: a only
		time.Sleep(time.Second)
		synctest.Wait()
		want := []string{"diff +[b c] -[] 3"}
		for _, l := range []*recorder{first, second} {
			frames := presenceFrames(t, l)
			require.Len(t, frames, 2)
			assert.Equal(t, "state [a] 1", describe(frames[0]))
			assert.Equal(t, want, []string{describe(frames[1])})
		}

		// The last listener out stops the events here.
		e.hub.Leave(t.Context(), "s", "a", first)
		e.hub.Leave(t.Context(), "s", "c", second)
		e.broker.mu.Lock()
		defer e.broker.mu.Unlock()
		assert.Equal(t, 1, e.broker.subscribes[presenceTopic("s")])
		assert.Equal(t, 1, e.broker.unsubscribe[presenceTopic("s")])
	})
}

func TestListenFailsWhenPresenceIsAway(t *testing.T) {
	e := newEventsHub(t, PresenceRules{})
	r := e.join("a", "")
	e.presence.mu.Lock()
	e.presence.fail = true
	e.presence.mu.Unlock()
	var pe *protocol.Error
	require.ErrorAs(t, e.hub.Listen(t.Context(), "s", r), &pe)
	assert.Equal(t, protocol.CodeUnavailable, pe.Code)
	require.ErrorIs(t, e.hub.Listen(t.Context(), "s", &recorder{}), ErrNotMember)
}

// FuzzDecodeBusEvent checks that no payload from another instance makes
// the decoder panic, that what it accepts names a connection and is a
// join or a leave, and that a view takes it.
func FuzzDecodeBusEvent(f *testing.F) {
	for _, s := range []string{
		string(encodeBusJoin(ports.Member{ConnectionID: "c1", UserType: "u", ClientType: "web", PresenceKey: "k:1"})),
		string(encodeBusLeave("c1", true)), string(encodeBusLeave("c1", false)),
		`{"e":"x","c":"c"}`, `{"e":"j"}`, `{"e":"j","c":""}`, `{"e":"l","c":5}`, `null`, `[]`, ``, `{"e":"j","c":"c","a":"yes"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		e, ok := decodeBusEvent(p)
		if !ok {
			return
		}
		if e.Conn == "" || (e.Event != busJoin && e.Event != busLeave) {
			t.Fatalf("accepted %+v", e)
		}
		v := NewPresenceView(PresenceRules{}, nil, time.Unix(0, 0))
		e.apply(v, time.Unix(1, 0))
		busEvent{Event: busLeave, Conn: e.Conn}.apply(v, time.Unix(2, 0))
		if _, ok := v.Flush(time.Unix(100, 0)); ok {
			t.Fatalf("a join and its leave were told")
		}
	})
}
