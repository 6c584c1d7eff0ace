package conversation_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

// Hand-written fakes of the ports, scripted per test.

// wait bounds every wait of the tests; a passing run never waits this long.
const wait = 10 * time.Second

// script is what the model does on one call.
type script struct {
	pieces []string
	// gap is the model's pace: it waits gap before each piece but the
	// first, and stall[i] more before piece i. Tests that set them run in
	// a testing/synctest bubble, where waiting takes no real time.
	gap   time.Duration
	stall map[int]time.Duration
	// late[i] delays piece i's delivery, not the model: the model sent
	// it on time and the next on time, as a busy network or CPU does.
	late map[int]time.Duration
	deaf bool // it waits through its gaps and stalls even when cancelled
	// clock: the gaps are kept on the model's own clock, as a remote
	// model's are (piece i is due gap*i after the first): a piece the
	// reader takes late, because a guardrail check held it, does not
	// delay the ones after it, which then come at once.
	clock bool
	stop  ports.StopReason // empty means end_turn
	err   error            // returned after the pieces
	block bool             // after the pieces, wait for the context to end
	usage ports.Usage
}

// scriptedModel plays one script per Stream call; the last one repeats.
type scriptedModel struct {
	mu      sync.Mutex
	scripts []script
	calls   []ports.ChatRequest
	// ended holds the context's error when each call returned: a
	// cancelled call saw its context end.
	ended    []error
	complete string
}

func (m *scriptedModel) Stream(ctx context.Context, req ports.ChatRequest, token func(string) error) (reply ports.Reply, err error) {
	m.mu.Lock()
	s := m.scripts[min(len(m.calls), len(m.scripts)-1)]
	m.calls = append(m.calls, req)
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.ended = append(m.ended, ctx.Err())
		m.mu.Unlock()
	}()
	start := time.Now()
	for i, p := range s.pieces {
		if err := ctx.Err(); err != nil {
			return ports.Reply{}, err
		}
		if s.clock {
			select {
			case <-ctx.Done():
				return ports.Reply{}, ctx.Err()
			case <-time.After(time.Until(start.Add(time.Duration(i) * s.gap))):
			}
			if err := token(p); err != nil {
				return ports.Reply{Usage: s.usage}, fmt.Errorf("scripted: %w", err)
			}
			continue
		}
		d := s.stall[i]
		if i > 0 {
			d += s.late[i] - s.late[i-1]
		}
		if i > 0 && s.deaf {
			time.Sleep(s.gap + d)
		} else if i > 0 && s.gap+d > 0 {
			select {
			case <-ctx.Done():
				return ports.Reply{}, ctx.Err()
			case <-time.After(s.gap + d):
			}
		}
		if err := token(p); err != nil {
			return ports.Reply{Usage: s.usage}, fmt.Errorf("scripted: %w", err)
		}
	}
	if s.block {
		select {
		case <-ctx.Done():
			return ports.Reply{}, ctx.Err()
		case <-time.After(wait):
			return ports.Reply{}, errors.New("scripted: never cancelled")
		}
	}
	if s.err != nil {
		return ports.Reply{}, s.err
	}
	stop := s.stop
	if stop == "" {
		stop = ports.StopEndTurn
	}
	return ports.Reply{Stop: stop, Usage: s.usage}, nil
}

func (m *scriptedModel) Complete(ctx context.Context, req ports.ChatRequest) (ports.Reply, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, req)
	return ports.Reply{Text: m.complete, Stop: ports.StopEndTurn}, nil
}

func (m *scriptedModel) requests() []ports.ChatRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.calls)
}

// wordGuardrail fails any text containing BAD, after delay (a round trip:
// tests that set it run in a testing/synctest bubble).
type wordGuardrail struct {
	whole bool
	err   error
	delay time.Duration
	// delayOf, when set, is the delay of the call-th check (from 0) of
	// text instead; a negative one waits for the check's context to end.
	delayOf func(call int, text string) time.Duration
	mu      sync.Mutex
	checked []string
	at      []time.Time // when each text was checked
	// active counts the checks under way; done is when each call
	// returned.
	active int
	done   map[int]time.Time
}

// inFlight returns how many checks are under way.
func (g *wordGuardrail) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.active
}

func (g *wordGuardrail) WholeAnswer() bool { return g.whole }

func (g *wordGuardrail) Check(ctx context.Context, text string) (ports.Verdict, error) {
	g.mu.Lock()
	call := len(g.checked)
	g.checked = append(g.checked, text)
	g.at = append(g.at, time.Now())
	g.active++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.active--
		if g.done == nil {
			g.done = map[int]time.Time{}
		}
		g.done[call] = time.Now()
		g.mu.Unlock()
	}()
	delay := g.delay
	if g.delayOf != nil {
		delay = g.delayOf(call, text)
	}
	if delay < 0 {
		<-ctx.Done()
		return ports.Verdict{}, ctx.Err()
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if g.err != nil {
		return ports.Verdict{}, g.err
	}
	if strings.Contains(text, "BAD") {
		return ports.Verdict{Reason: "it says BAD"}, nil
	}
	return ports.Verdict{Pass: true}, nil
}

// humanDetector escalates messages asking for a human.
type humanDetector struct{}

func (humanDetector) Detect(ctx context.Context, message string, history []ports.Message) (ports.Escalation, error) {
	if strings.Contains(message, "human") {
		return ports.Escalation{Escalate: true, Reason: ports.ReasonUserRequested, Detail: "asked for a human"}, nil
	}
	return ports.Escalation{}, nil
}

// fakeStore keeps threads in maps.
type fakeStore struct {
	mu          sync.Mutex
	threads     map[string]*ports.Thread
	checkpoints map[string][]ports.Checkpoint
	failAppend  error // fails turns that hold an answer
	failTurn    error // fails every SaveTurn
	turns       int   // SaveTurn calls
	fences      map[string]int64
	// hang makes Load wait until its context ends, as a database that
	// accepts connections but no longer answers; hangSave does the same
	// to SaveTurn.
	hang     bool
	hangSave bool
}

func newFakeStore() *fakeStore {
	return &fakeStore{threads: map[string]*ports.Thread{}, checkpoints: map[string][]ports.Checkpoint{}, fences: map[string]int64{}}
}

func (s *fakeStore) Load(ctx context.Context, id string) (ports.Thread, error) {
	s.mu.Lock()
	hang := s.hang
	s.mu.Unlock()
	if hang {
		<-ctx.Done()
		return ports.Thread{}, fmt.Errorf("fake store: load: %w", ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	th, ok := s.threads[id]
	if !ok {
		return ports.Thread{}, conversation.ErrThreadNotFound
	}
	out := *th
	out.Messages = slices.Clone(th.Messages)
	return out, nil
}

func (s *fakeStore) History(ctx context.Context, id string) ([]ports.Message, error) {
	th, err := s.Load(ctx, id)
	return th.Messages, err
}

func (s *fakeStore) Checkpoints(ctx context.Context, id string) ([]ports.Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.checkpoints[id]), nil
}

func (s *fakeStore) nodes(id string) []string {
	cps, _ := s.Checkpoints(context.Background(), id)
	var out []string
	for _, cp := range cps {
		out = append(out, cp.Node)
	}
	return out
}

// fakeLock holds one lease per thread.
type fakeLock struct {
	mu       sync.Mutex
	held     map[string]bool
	renewErr error
	renewed  int
	released int
	fence    int64            // the last lease's fencing token
	holder   map[string]int64 // the token of the lease holding each thread
	err      error            // Acquire fails with it
	// releaseFails is how many of the next releases fail (-1: all), as
	// with Redis away; releaseTries counts every release call.
	releaseFails int
	releaseTries int
	acquiredAt   time.Time // when the last lease was taken
}

func newFakeLock() *fakeLock { return &fakeLock{held: map[string]bool{}, holder: map[string]int64{}} }

func (l *fakeLock) Acquire(ctx context.Context, id, owner string, ttl time.Duration) (ports.Lease, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	if l.held[id] {
		return nil, conversation.ErrThreadBusy
	}
	l.held[id] = true
	l.acquiredAt = time.Now()
	l.fence++
	l.holder[id] = l.fence
	return &fakeLease{l: l, id: id, fence: l.fence}, nil
}

// takeOver frees the thread as an expired lease would and acquires it for
// another owner.
func (l *fakeLock) takeOver(id string) ports.Lease {
	l.mu.Lock()
	delete(l.held, id)
	l.mu.Unlock()
	lease, err := l.Acquire(context.Background(), id, "other", time.Minute)
	if err != nil {
		panic(err)
	}
	return lease
}

func (l *fakeLock) isHeld(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[id]
}

type fakeLease struct {
	l     *fakeLock
	id    string
	fence int64
	done  bool
}

func (f *fakeLease) Fence() int64 { return f.fence }

func (f *fakeLease) Renew(ctx context.Context) error {
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	f.l.renewed++
	return f.l.renewErr
}

func (f *fakeLease) Release(ctx context.Context) error {
	f.l.mu.Lock()
	defer f.l.mu.Unlock()
	f.l.releaseTries++
	if f.l.releaseFails != 0 {
		if f.l.releaseFails > 0 {
			f.l.releaseFails--
		}
		return errors.New("redis: lock release: EOF")
	}
	if !f.done {
		f.done = true
		if f.l.holder[f.id] == f.fence { // it never frees a newer lease's lock
			delete(f.l.held, f.id)
		}
		f.l.released++
	}
	return nil
}

// recorder collects published chat events.
type recorder struct {
	mu     sync.Mutex
	events []ports.ChatEvent
}

func (p *recorder) PublishChat(ctx context.Context, threadID string, ev ports.ChatEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, ev)
	return nil
}

func (p *recorder) kinds() []ports.ChatEventKind {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ports.ChatEventKind
	for _, e := range p.events {
		out = append(out, e.Kind)
	}
	return out
}

// harness wires a Conversation to fakes.
type harness struct {
	store *fakeStore
	lock  *fakeLock
	model *scriptedModel
	guard *wordGuardrail
	pub   *recorder
	conv  *conversation.Conversation
}

func newHarness(scripts []script, whole bool, maxRewrites int, mod ...func(*conversation.Config)) (*harness, error) {
	h := &harness{
		store: newFakeStore(),
		lock:  newFakeLock(),
		model: &scriptedModel{scripts: scripts},
		guard: &wordGuardrail{whole: whole},
		pub:   &recorder{},
	}
	var seq int
	var seqMu sync.Mutex
	cfg := conversation.Config{
		Epoch:                "epoch-1",
		Store:                h.store,
		Lock:                 h.lock,
		Model:                h.model,
		Guardrail:            h.guard,
		Escalation:           humanDetector{},
		Publisher:            h.pub,
		SystemPrompt:         "be nice",
		MaxGuardrailRewrites: maxRewrites,
		FallbackAnswer:       "Sorry, a person will help you.",
		NewID: func() string {
			seqMu.Lock()
			defer seqMu.Unlock()
			seq++
			return fmt.Sprintf("id-%d", seq)
		},
		Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
	}
	for _, m := range mod {
		m(&cfg)
	}
	conv, err := conversation.New(cfg)
	h.conv = conv
	return h, err
}

// sink collects a run's events and when each was emitted.
type sink struct {
	mu     sync.Mutex
	events []conversation.Event
	at     []time.Time
	onTok  func(conversation.Event)
}

func (s *sink) emit(ev conversation.Event) {
	s.mu.Lock()
	s.events = append(s.events, ev)
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
	if ev.Kind == conversation.EventToken && s.onTok != nil {
		s.onTok(ev)
	}
}

func (s *sink) tokens() []string {
	var out []string
	for _, ev := range s.events {
		if ev.Kind == conversation.EventToken {
			out = append(out, ev.Content)
		}
	}
	return out
}

func (s *sink) kinds() []conversation.EventKind {
	var out []conversation.EventKind
	for _, ev := range s.events {
		if len(out) > 0 && ev.Kind == conversation.EventToken && out[len(out)-1] == conversation.EventToken {
			continue // one entry per run of tokens
		}
		out = append(out, ev.Kind)
	}
	return out
}

func (s *sink) last() conversation.Event { return s.events[len(s.events)-1] }
