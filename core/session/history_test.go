package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

// fakeHistory numbers and keeps a session's messages in memory and
// publishes them on its broker while it holds its lock, so deliveries come
// in offset order, as the port requires. Hooks run inside Recover.
type fakeHistory struct {
	broker *fakeBroker
	epoch  string
	size   int

	mu           sync.Mutex
	top          map[string]uint64
	kept         map[string][][]byte // the last size messages, oldest first
	failRead     bool
	failPub      bool
	notHere      bool   // publish without delivering; the caller is to
	afterPublish func() // in Publish, once the message is kept
	lag          bool   // publish without delivering yet: flush delivers
	lagged       [][]byte
	beforeRead   func() // in Recover, before the history is read
	afterRead    func() // in Recover, after it was read
}

func newFakeHistory(b *fakeBroker, size int) *fakeHistory {
	return &fakeHistory{broker: b, epoch: "E1", size: size, top: map[string]uint64{}, kept: map[string][][]byte{}}
}

func (f *fakeHistory) Publish(ctx context.Context, s string, m ports.Numbered) (ports.Published, error) {
	pub, err := f.publish(ctx, s, m)
	if f.afterPublish != nil {
		f.afterPublish()
	}
	return pub, err
}

func (f *fakeHistory) publish(ctx context.Context, s string, m ports.Numbered) (ports.Published, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failPub {
		return ports.Published{}, errors.New("history away")
	}
	f.top[s]++
	msg := m.Bytes(f.top[s])
	f.kept[s] = append(f.kept[s], msg)
	if len(f.kept[s]) > f.size {
		f.kept[s] = f.kept[s][1:]
	}
	pos := ports.Position{Offset: f.top[s], Epoch: f.epoch}
	if f.notHere {
		return ports.Published{Position: pos, DeliverHere: true}, nil
	}
	if f.lag {
		f.lagged = append(f.lagged, msg)
		return ports.Published{Position: pos}, nil
	}
	if err := f.broker.Publish(ctx, s, msg); err != nil {
		return ports.Published{}, err
	}
	return ports.Published{Position: pos}, nil
}

func (f *fakeHistory) Recover(_ context.Context, s string, from *ports.Position) (ports.Recovery, error) {
	if f.beforeRead != nil {
		f.beforeRead()
	}
	f.mu.Lock()
	rec, err := f.read(s, from)
	f.mu.Unlock()
	if f.afterRead != nil {
		f.afterRead()
	}
	return rec, err
}

func (f *fakeHistory) read(s string, from *ports.Position) (ports.Recovery, error) {
	if f.failRead {
		return ports.Recovery{}, errors.New("history away")
	}
	top := f.top[s]
	rec := ports.Recovery{Top: ports.Position{Offset: top, Epoch: f.epoch}}
	if from == nil || from.Epoch != f.epoch || from.Offset > top {
		return rec, nil
	}
	missed := top - from.Offset
	if missed > uint64(len(f.kept[s])) {
		return rec, nil
	}
	rec.Recovered = true
	rec.Messages = append([][]byte(nil), f.kept[s][uint64(len(f.kept[s]))-missed:]...)
	return rec, nil
}

// flush delivers the lagging publications, in order.
func (f *fakeHistory) flush(ctx context.Context, s string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lag = false
	for _, m := range f.lagged {
		if err := f.broker.Publish(ctx, s, m); err != nil {
			return err
		}
	}
	f.lagged = nil
	return nil
}

type historyFixture struct {
	hub     *Hub
	broker  *fakeBroker
	history *fakeHistory
}

func newHistoryFixture(t *testing.T, size int) historyFixture {
	t.Helper()
	b := newFakeBroker(true)
	f := historyFixture{broker: b, history: newFakeHistory(b, size)}
	h, err := NewHub(HubConfig{Broker: b, Presence: newFakePresence(), History: f.history, LiveWait: 50 * time.Millisecond})
	require.NoError(t, err)
	f.hub = h
	return f
}

// said returns a session_message of admin with msg and the offset.
func said(msg string, offset uint64) string {
	return string(NumberSessionMessage(admin, json.RawMessage(msg), nil).Bytes(offset))
}

func TestJoinSince(t *testing.T) {
	ctx := context.Background()
	since := func(o uint64, e string) *ports.Position { return &ports.Position{Offset: o, Epoch: e} }
	tests := []struct {
		name string
		run  func(t *testing.T, f historyFixture)
	}{
		{"without since, hello_ok tells the position and broadcasts are numbered", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			w := &recorder{}
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`"before"`), nil))
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, nil))
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`"after"`), nil))
			assert.Equal(t, []string{
				`{"type":"hello_ok","session_id":"s","connection_id":"c2","offset":1,"epoch":"E1"}`,
				said(`"after"`, 2),
			}, w.frames())
		}},
		{"with since, the missed broadcasts come in order after hello_ok, then live ones", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			for i := range 5 {
				require.NoError(t, f.hub.Broadcast(ctx, "s", admin, fmt.Appendf(nil, "%d", i+1), nil))
			}
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, since(2, "E1")))
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`6`), nil))
			assert.Equal(t, []string{
				`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":true,"offset":5,"epoch":"E1"}`,
				said(`3`, 3), said(`4`, 4), said(`5`, 5), said(`6`, 6),
			}, w.frames())
		}},
		{"a client that missed nothing is recovered with nothing to replay", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil))
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, since(1, "E1")))
			assert.Equal(t, []string{`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":true,"offset":1,"epoch":"E1"}`}, w.frames())
		}},
		{"what was trimmed cannot be recovered: recovered false and nothing replayed", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			for i := range 5 { // size 3 keeps 3, 4, 5
				require.NoError(t, f.hub.Broadcast(ctx, "s", admin, fmt.Appendf(nil, "%d", i+1), nil))
			}
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, since(1, "E1")))
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`6`), nil))
			assert.Equal(t, []string{
				`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":false,"offset":5,"epoch":"E1"}`,
				said(`6`, 6),
			}, w.frames())
		}},
		{"another epoch cannot be recovered", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil))
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, since(0, "E0")))
			assert.Equal(t, []string{`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":false,"offset":1,"epoch":"E1"}`}, w.frames())
		}},
		{"at the seam nothing is lost or doubled", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil))
			// Published once the joiner keeps deliveries but before the
			// read: both kept and read, sent once. Published after the
			// read: only kept, sent after the history. The chat_event has
			// no offset: sent as it came.
			f.history.beforeRead = func() {
				require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`2`), nil))
				require.NoError(t, f.hub.Publish(ctx, "s", []byte(`{"type":"chat_event"}`)))
			}
			f.history.afterRead = func() {
				require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`3`), nil))
			}
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, since(0, "E1")))
			f.history.beforeRead, f.history.afterRead = nil, nil
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`4`), nil))
			assert.Equal(t, []string{
				`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":true,"offset":2,"epoch":"E1"}`,
				said(`1`, 1), said(`2`, 2), `{"type":"chat_event"}`, said(`3`, 3), said(`4`, 4),
			}, w.frames())
		}},
		{"broadcasts the read had that the live stream brings later are not sent again", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil))
			// 2 and 3 are in the history when it is read, but their
			// deliveries lag behind (Redis: another connection).
			f.history.beforeRead = func() {
				f.history.lag = true
				require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`2`), nil))
				require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`3`), nil))
			}
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, since(0, "E1")))
			require.NoError(t, f.history.flush(ctx, "s"))
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`4`), nil))
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`5`), nil))
			assert.Equal(t, []string{
				`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":true,"offset":3,"epoch":"E1"}`,
				said(`1`, 1), said(`2`, 2), said(`3`, 3), said(`4`, 4), said(`5`, 5),
			}, w.frames())
			// Once the stream passed the top, it is a plain member.
			g := f.hub.shard("s").groups["s"]
			require.Eventually(t, func() bool {
				g.joining.RLock()
				defer g.joining.RUnlock()
				return len(g.joiners) == 0 && len(*g.subs.Load()) == 1
			}, 10*time.Second, time.Millisecond)
		}},
		{"a history that cannot be read leaves the client live without a position", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			f.history.failRead = true
			f.history.afterRead = func() {
				require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil))
			}
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, since(0, "E1")))
			assert.Equal(t, []string{
				`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":false}`,
				said(`1`, 1),
			}, w.frames())
		}},
		{"a broadcast the history could not take reaches this instance without offset", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, nil))
			f.history.failPub = true
			require.ErrorIs(t, f.hub.Broadcast(ctx, "s", admin, []byte(`"x"`), nil), ErrUnavailable)
			assert.Equal(t, []string{
				`{"type":"hello_ok","session_id":"s","connection_id":"c2","offset":0,"epoch":"E1"}`,
				string(EncodeSessionMessage(admin, []byte(`"x"`), nil)),
			}, w.frames())
		}},
		{"a broadcast the instance delivers itself reaches each member once", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			// old joined before the broadcast. read joins once the
			// history took it, and reads it there, before the instance
			// delivers it itself: it must not get it twice.
			old, read := &recorder{}, &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", admin, old, nil))
			f.history.notHere = true
			f.history.afterPublish = func() {
				f.history.afterPublish = nil
				require.NoError(t, f.hub.JoinSince(ctx, "s", agent, read, since(0, "E1")))
			}
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil))
			assert.Equal(t, []string{`{"type":"hello_ok","session_id":"s","connection_id":"c1","offset":0,"epoch":"E1"}`, said(`1`, 1)}, old.frames())
			assert.Equal(t, []string{`{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":true,"offset":1,"epoch":"E1"}`, said(`1`, 1)}, read.frames())
		}},
		{"a joiner that leaves keeps nobody subscribed", func(t *testing.T, f historyFixture) { //nolint:thelper // a table body, run under t.Run
			w := &recorder{}
			require.NoError(t, f.hub.JoinSince(ctx, "s", agent, w, nil))
			f.hub.Leave(ctx, "s", agent.ConnectionID, w)
			assert.Equal(t, 0, f.hub.LocalSessions())
			assert.Equal(t, 1, f.broker.unsubscribe["s"])
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newHistoryFixture(t, 3)) })
	}
}

func TestJoinSinceWithoutHistory(t *testing.T) {
	ctx := context.Background()
	f := newHubFixture(t, true)
	plain, asked := &recorder{}, &recorder{}
	require.NoError(t, f.hub.JoinSince(ctx, "s", admin, plain, nil))
	require.NoError(t, f.hub.JoinSince(ctx, "s", agent, asked, &ports.Position{Offset: 3, Epoch: "E1"}))
	require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`"m"`), nil))
	m := "W:" + string(EncodeSessionMessage(admin, []byte(`"m"`), nil))
	// Today's hello_ok exactly; asked for history, told there is none.
	assert.Equal(t, []string{"W:" + string(EncodeHelloOK("s", "c1")), m}, plain.frames())
	assert.Equal(t, []string{`W:{"type":"hello_ok","session_id":"s","connection_id":"c2","recovered":false}`, m}, asked.frames())
	assert.NotContains(t, m, "offset")
}

// TestJoinSinceUnderConcurrentPublishing joins and rejoins listeners
// while several publishers broadcast without pause: every listener gets
// every offset after the one it came back from exactly once, in order.
func TestJoinSinceUnderConcurrentPublishing(t *testing.T) {
	ctx := context.Background()
	f := newHistoryFixture(t, 1<<20)
	const publishers, each, listeners = 4, 300, 8
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for i := range each {
				assert.NoError(t, f.hub.Broadcast(ctx, "s", admin, fmt.Appendf(nil, `"%d-%d"`, p, i), nil))
			}
		}()
	}
	var joins sync.WaitGroup
	// A delivery under way when a listener leaves may still reach it, so
	// each round is checked against the position it resumed from.
	type round struct {
		w    *recorder
		from *ports.Position
	}
	recs := make([][]round, listeners)
	for l := range listeners {
		joins.Add(1)
		go func() {
			defer joins.Done()
			var from *ports.Position
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				w := &recorder{}
				m := ports.Member{ConnectionID: fmt.Sprintf("l%d-%d", l, n), UserType: "agent"}
				if !assert.NoError(t, f.hub.JoinSince(ctx, "s", m, w, from)) {
					return
				}
				recs[l] = append(recs[l], round{w, from})
				// Stay a moment, then leave and come back from the last
				// offset seen.
				for range 50 {
					if len(w.frames()) > 3 {
						break
					}
					time.Sleep(time.Millisecond)
				}
				f.hub.Leave(ctx, "s", m.ConnectionID, w)
				from = lastPosition(t, w.frames())
			}
		}()
	}
	pubs.Wait()
	close(stop)
	joins.Wait()

	for l, rounds := range recs {
		for r, rd := range rounds {
			frames := rd.w.frames()
			var hello struct {
				Recovered *bool
				Offset    uint64
				Epoch     string
			}
			require.NoError(t, json.Unmarshal([]byte(frames[0]), &hello))
			next := hello.Offset + 1
			if r > 0 {
				require.NotNil(t, hello.Recovered, "listener %d round %d", l, r)
				require.True(t, *hello.Recovered, "listener %d round %d", l, r)
				next = rd.from.Offset + 1
			}
			for _, fr := range frames[1:] {
				o, ok := offsetOf([]byte(fr))
				require.True(t, ok, fr)
				require.Equal(t, next, o, "listener %d round %d: %s", l, r, strings.Join(frames, "\n"))
				next++
			}
		}
	}
}

// lastPosition is where a listener that got frames resumes from.
func lastPosition(t *testing.T, frames []string) *ports.Position {
	t.Helper()
	var hello struct {
		Offset uint64
		Epoch  string
	}
	// Called from the listeners' goroutines: assert, not require.
	assert.NoError(t, json.Unmarshal([]byte(frames[0]), &hello))
	pos := &ports.Position{Offset: hello.Offset, Epoch: hello.Epoch}
	for _, fr := range frames[1:] {
		if o, ok := offsetOf([]byte(fr)); ok {
			pos.Offset = o
		}
	}
	return pos
}
