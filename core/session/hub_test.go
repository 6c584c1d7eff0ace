package session

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/logctx"
	"github.com/wsserver/wsserver/core/protocol"
	"github.com/wsserver/wsserver/ports"
)

// fakeBroker is an in-process broker whose subscriptions become live only
// when the test says so, and whose publishing can be made to fail.
type fakeBroker struct {
	mu          sync.Mutex
	subs        map[string]func(ports.Delivery)
	subscribes  map[string]int
	unsubscribe map[string]int
	live        chan struct{}
	failPublish bool
}

func newFakeBroker(live bool) *fakeBroker {
	b := &fakeBroker{subs: map[string]func(ports.Delivery){}, subscribes: map[string]int{}, unsubscribe: map[string]int{}, live: make(chan struct{})}
	if live {
		close(b.live)
	}
	return b
}

func (b *fakeBroker) Publish(_ context.Context, s string, p []byte) error {
	b.mu.Lock()
	deliver, fail := b.subs[s], b.failPublish
	b.mu.Unlock()
	if fail {
		return errors.New("broker away")
	}
	if deliver != nil {
		deliver(ports.Delivery{Payload: p, Sent: time.Now()})
	}
	return nil
}

func (b *fakeBroker) Subscribe(s string, d func(ports.Delivery)) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs[s] = d
	b.subscribes[s]++
	return b.live
}

func (b *fakeBroker) Unsubscribe(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.subs, s)
	b.unsubscribe[s]++
}

type fakePresence struct {
	mu      sync.Mutex
	members map[string]map[string]ports.Member
	fail    bool
}

func newFakePresence() *fakePresence {
	return &fakePresence{members: map[string]map[string]ports.Member{}}
}

func (p *fakePresence) Add(_ context.Context, s string, m ports.Member) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errors.New("presence away")
	}
	if p.members[s] == nil {
		p.members[s] = map[string]ports.Member{}
	}
	p.members[s][m.ConnectionID] = m
	return nil
}

func (p *fakePresence) Remove(_ context.Context, s, id string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return errors.New("presence away")
	}
	delete(p.members[s], id)
	return nil
}

func (p *fakePresence) List(_ context.Context, s string) ([]ports.Member, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail {
		return nil, errors.New("presence away")
	}
	var out []ports.Member
	for _, m := range p.members[s] {
		out = append(out, m)
	}
	return out, nil
}

// recorder is a Subscriber that keeps what it was sent.
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) Send(wire []byte) {
	r.mu.Lock()
	r.got = append(r.got, string(wire))
	r.mu.Unlock()
}

func (r *recorder) frames() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

type countingObserver struct {
	mu         sync.Mutex
	deliveries int
	recipients int
	errors     []string
}

func (o *countingObserver) Delivered(_ time.Duration, n int) {
	o.mu.Lock()
	o.deliveries++
	o.recipients += n
	o.mu.Unlock()
}

func (o *countingObserver) BackendError(op string) {
	o.mu.Lock()
	o.errors = append(o.errors, op)
	o.mu.Unlock()
}

type hubFixture struct {
	hub      *Hub
	broker   *fakeBroker
	presence *fakePresence
	observer *countingObserver
	encodes  *int
}

func newHubFixture(t *testing.T, live bool) hubFixture {
	t.Helper()
	f := hubFixture{broker: newFakeBroker(live), presence: newFakePresence(), observer: &countingObserver{}, encodes: new(int)}
	var mu sync.Mutex
	h, err := NewHub(HubConfig{
		Broker: f.broker, Presence: f.presence, Observer: f.observer, LiveWait: 50 * time.Millisecond,
		Encode: func(p []byte) []byte {
			mu.Lock()
			*f.encodes++
			mu.Unlock()
			return append([]byte("W:"), p...)
		},
	})
	require.NoError(t, err)
	f.hub = h
	return f
}

var (
	admin = ports.Member{ConnectionID: "c1", UserType: "admin", ClientType: "web"}
	agent = ports.Member{ConnectionID: "c2", UserType: "agent"}
)

func TestHubRules(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, f hubFixture)
	}{
		{"the welcome comes first, then every broadcast to every member, the sender included", func(t *testing.T, f hubFixture) {
			a, b := &recorder{}, &recorder{}
			require.NoError(t, f.hub.Join(ctx, "s", admin, a, []byte("hi a")))
			require.NoError(t, f.hub.Join(ctx, "s", agent, b, []byte("hi b")))
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`"m1"`), nil))
			require.NoError(t, f.hub.Broadcast(ctx, "s", agent, []byte(`"m2"`), []byte(`{"k":1}`)))
			m1 := "W:" + string(EncodeSessionMessage(admin, []byte(`"m1"`), nil))
			m2 := "W:" + string(EncodeSessionMessage(agent, []byte(`"m2"`), []byte(`{"k":1}`)))
			assert.Equal(t, []string{"W:hi a", m1, m2}, a.frames())
			assert.Equal(t, []string{"W:hi b", m1, m2}, b.frames())
		}},
		{"a broadcast is encoded once whatever the number of sockets", func(t *testing.T, f hubFixture) {
			for i := range 10 {
				require.NoError(t, f.hub.Join(ctx, "s", ports.Member{ConnectionID: string(rune('a' + i)), UserType: "u"}, &recorder{}, nil))
			}
			before := *f.encodes
			require.NoError(t, f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil))
			assert.Equal(t, 1, *f.encodes-before)
			assert.Equal(t, 1, f.observer.deliveries)
			assert.Equal(t, 10, f.observer.recipients)
		}},
		{"sessions do not leak into each other", func(t *testing.T, f hubFixture) {
			a, b := &recorder{}, &recorder{}
			require.NoError(t, f.hub.Join(ctx, "s1", admin, a, nil))
			require.NoError(t, f.hub.Join(ctx, "s2", agent, b, nil))
			require.NoError(t, f.hub.Broadcast(ctx, "s1", admin, []byte(`1`), nil))
			assert.Len(t, a.frames(), 2)
			assert.Len(t, b.frames(), 1)
		}},
		{"one subscription per session while it has members here", func(t *testing.T, f hubFixture) {
			a, b := &recorder{}, &recorder{}
			require.NoError(t, f.hub.Join(ctx, "s", admin, a, nil))
			require.NoError(t, f.hub.Join(ctx, "s", agent, b, nil))
			assert.Equal(t, 1, f.broker.subscribes["s"])
			f.hub.Leave(ctx, "s", admin.ConnectionID, a)
			assert.Equal(t, 0, f.broker.unsubscribe["s"])
			f.hub.Leave(ctx, "s", agent.ConnectionID, b)
			assert.Equal(t, 1, f.broker.unsubscribe["s"])
			assert.Equal(t, 0, f.hub.LocalSessions())
		}},
		{"presence counts joins and forgets leaves at once", func(t *testing.T, f hubFixture) {
			a, b := &recorder{}, &recorder{}
			require.NoError(t, f.hub.Join(ctx, "s", admin, a, nil))
			require.NoError(t, f.hub.Join(ctx, "s", agent, b, nil))
			got, err := f.hub.Presence(ctx, "s")
			require.NoError(t, err)
			assert.ElementsMatch(t, []ports.Member{admin, agent}, got)
			f.hub.Leave(ctx, "s", admin.ConnectionID, a)
			got, err = f.hub.Presence(ctx, "s")
			require.NoError(t, err)
			assert.Equal(t, []ports.Member{agent}, got)
		}},
		{"a left member gets nothing more", func(t *testing.T, f hubFixture) {
			a, b := &recorder{}, &recorder{}
			require.NoError(t, f.hub.Join(ctx, "s", admin, a, nil))
			require.NoError(t, f.hub.Join(ctx, "s", agent, b, nil))
			f.hub.Leave(ctx, "s", admin.ConnectionID, a)
			require.NoError(t, f.hub.Broadcast(ctx, "s", agent, []byte(`1`), nil))
			assert.Len(t, a.frames(), 1)
			assert.Len(t, b.frames(), 2)
		}},
		{"with the broker away a broadcast still reaches this instance and says unavailable", func(t *testing.T, f hubFixture) {
			a := &recorder{}
			require.NoError(t, f.hub.Join(ctx, "s", admin, a, nil))
			f.broker.mu.Lock()
			f.broker.failPublish = true
			f.broker.mu.Unlock()
			err := f.hub.Broadcast(ctx, "s", admin, []byte(`1`), nil)
			require.ErrorIs(t, err, ErrUnavailable)
			assert.Len(t, a.frames(), 2)
			assert.Contains(t, f.observer.errors, "publish")
		}},
		{"with presence away a join still works and a query says unavailable", func(t *testing.T, f hubFixture) {
			f.presence.fail = true
			a := &recorder{}
			require.NoError(t, f.hub.Join(ctx, "s", admin, a, []byte("hi")))
			assert.Equal(t, []string{"W:hi"}, a.frames())
			_, err := f.hub.Presence(ctx, "s")
			var se *protocol.Error
			require.ErrorAs(t, err, &se)
			assert.Equal(t, protocol.CodeUnavailable, se.Code)
			assert.Contains(t, f.observer.errors, "presence_add")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newHubFixture(t, true))
		})
	}
}

func TestJoinWaitsForTheSubscription(t *testing.T) {
	f := newHubFixture(t, false)
	a := &recorder{}
	joined := make(chan error, 1)
	go func() { joined <- f.hub.Join(context.Background(), "s", admin, a, []byte("hi")) }()
	// Not live: the join gives up waiting after LiveWait and serves
	// locally, telling the observer.
	require.NoError(t, <-joined)
	assert.Equal(t, []string{"W:hi"}, a.frames())
	assert.Contains(t, f.observer.errors, "subscribe")
}

func TestJoinGivesUpWhenTheSocketGoes(t *testing.T) {
	f := newHubFixture(t, false)
	f.hub.cfg.LiveWait = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.hub.Join(ctx, "s", admin, &recorder{}, nil)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 0, f.hub.LocalSessions())
	assert.Equal(t, 1, f.broker.unsubscribe["s"])
}

// welcomeRacer is a Subscriber that, as its welcome is handed to it,
// starts a publication on the session from another goroutine, as a chat
// run on another socket would once the client has read hello_ok.
type welcomeRacer struct {
	recorder
	publish func()
	done    chan struct{}
}

func (w *welcomeRacer) Send(wire []byte) {
	w.recorder.Send(wire)
	if w.done != nil {
		return
	}
	w.done = make(chan struct{})
	go func() {
		defer close(w.done)
		w.publish()
	}()
	// Give the publication every chance to run before Join goes on. It is
	// not a timed assertion: with the join made atomic it waits for Join
	// either way; without, it completes here and is lost to this socket.
	select {
	case <-w.done:
	case <-time.After(100 * time.Millisecond):
	}
}

// A client that has its hello_ok gets everything published on the session
// after that: the welcome and the membership are one step for deliveries.
// Before, hello_ok could reach the client while the socket was not yet a
// member, and a message published in between was lost to it (a chat
// event mirrored from a thread the client had just started, say).
func TestJoinWelcomeAndMembershipAreOneStep(t *testing.T) {
	ctx := context.Background()
	f := newHubFixture(t, true)
	// The session exists already (another member), so the race is only
	// between the welcome and the membership of the new socket.
	require.NoError(t, f.hub.Join(ctx, "s", agent, &recorder{}, nil))
	w := &welcomeRacer{publish: func() {
		assert.NoError(t, f.hub.Publish(ctx, "s", []byte("after hello")))
	}}
	require.NoError(t, f.hub.Join(ctx, "s", admin, w, []byte("hello_ok")))
	<-w.done
	assert.Equal(t, []string{"W:hello_ok", "W:after hello"}, w.frames())
}

// A hub's failure line names its session once, whether the context
// carries it already (a session socket's) or not (a thread's chat events),
// with the other ids the context carries.
func TestFailureLinesNameTheSessionOnce(t *testing.T) {
	bg := context.Background()
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"a context without ids", bg, `"err":"presence away","session_id":"s"}`},
		{"a session socket's context", logctx.With(bg, slog.String("endpoint", "session"), slog.String("session_id", "s"), slog.String("connection_id", "c1")),
			`"err":"presence away","endpoint":"session","connection_id":"c1","session_id":"s"}`},
		{"a chat's context", logctx.With(bg, slog.String("thread_id", "t1")),
			`"err":"presence away","thread_id":"t1","session_id":"s"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			presence := newFakePresence()
			presence.fail = true
			h, err := NewHub(HubConfig{
				Broker: newFakeBroker(true), Presence: presence, Encode: func(p []byte) []byte { return p },
				Log: slog.New(logctx.NewHandler(slog.NewJSONHandler(&logs, nil))),
			})
			require.NoError(t, err)
			_, err = h.Presence(tt.ctx, "s")
			require.Error(t, err)
			assert.Contains(t, logs.String(), `"msg":"presence list failed",`+tt.want)
			assert.Equal(t, 1, strings.Count(logs.String(), `"session_id":`), logs.String())
		})
	}
}
