package memory

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.AnswerLog = (*Answers)(nil)

// AnswersConfig bounds an Answers. Zero fields mean their defaults.
type AnswersConfig struct {
	// TTL is how long an answer is kept after its last entry
	// (RESUME_TTL); zero means 300 seconds.
	TTL time.Duration
	// MaxEvents bounds the entries kept per answer, the newest
	// (RESUME_MAX_EVENTS); zero means 1000.
	MaxEvents int
	// MaxAnswers bounds the answers kept; past it the one written
	// longest ago goes. Zero means 10000.
	MaxAnswers int
}

// Answers is the in-process answer log: a ring of entries per answer,
// and the answer's followers, all lost with the process (whose start id
// is the epoch its writers give).
type Answers struct {
	cfg AnswersConfig

	mu      sync.Mutex
	answers map[string]*answerLog // by thread + "\x00" + message id
	latest  map[string]string     // thread → its latest answer's message id
	appends int
}

type answerLog struct {
	thread, msg, epoch string
	entries            []ports.AnswerEntry // the newest MaxEvents
	top                int64
	done               bool
	text               strings.Builder
	expires            time.Time
	followers          map[uint64]func(ports.AnswerEntry)
	next               uint64
}

// NewAnswers returns an empty in-process answer log.
func NewAnswers(cfg AnswersConfig) (*Answers, error) {
	if cfg.TTL < 0 || cfg.MaxEvents < 0 || cfg.MaxAnswers < 0 {
		return nil, errors.New("memory: answers: ttl and bounds must not be negative")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 300 * time.Second
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 1000
	}
	if cfg.MaxAnswers == 0 {
		cfg.MaxAnswers = 10000
	}
	return &Answers{cfg: cfg, answers: make(map[string]*answerLog), latest: make(map[string]string)}, nil
}

func answerKey(thread, msg string) string { return thread + "\x00" + msg }

// Append logs entries and hands them to the answer's followers, on the
// caller's goroutine.
func (a *Answers) Append(ctx context.Context, key ports.AnswerKey, entries []ports.AnswerEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sweepLocked(now)
	k := answerKey(key.ThreadID, key.MessageID)
	l := a.answers[k]
	if l == nil {
		l = &answerLog{thread: key.ThreadID, msg: key.MessageID, epoch: key.Epoch, followers: make(map[uint64]func(ports.AnswerEntry))}
		a.answers[k] = l
	}
	a.latest[key.ThreadID] = key.MessageID
	l.expires = now.Add(a.cfg.TTL)
	var added []ports.AnswerEntry
	for _, e := range entries {
		if l.done || e.Final == nil && e.Seq <= l.top {
			continue // logged already
		}
		if e.Final != nil {
			l.done = true
		} else {
			l.top = e.Seq
			l.text.WriteString(e.Text)
		}
		l.entries = append(l.entries, e)
		added = append(added, e)
	}
	if n := len(l.entries) - a.cfg.MaxEvents; n > 0 {
		l.entries = append(l.entries[:0:0], l.entries[n:]...)
	}
	for _, f := range l.followers {
		for _, e := range added {
			f(e)
		}
	}
	return nil
}

// sweepLocked forgets expired answers every so often, and the oldest past
// the bound.
func (a *Answers) sweepLocked(now time.Time) {
	a.appends++
	if a.appends%256 != 0 && len(a.answers) < a.cfg.MaxAnswers {
		return
	}
	var oldest string
	var oldestAt time.Time
	for k, l := range a.answers {
		if !now.Before(l.expires) {
			a.forgetLocked(k, l)
			continue
		}
		if oldest == "" || l.expires.Before(oldestAt) {
			oldest, oldestAt = k, l.expires
		}
	}
	if len(a.answers) >= a.cfg.MaxAnswers && oldest != "" {
		a.forgetLocked(oldest, a.answers[oldest])
	}
}

func (a *Answers) forgetLocked(k string, l *answerLog) {
	delete(a.answers, k)
	if a.latest[l.thread] == l.msg {
		delete(a.latest, l.thread)
	}
}

// Follow returns what is logged of the answer after seq after, and hands
// deliver what is logged later.
func (a *Answers) Follow(ctx context.Context, threadID, messageID string, after int64, deliver func(ports.AnswerEntry)) (ports.AnswerCatchUp, func(), error) {
	nothing := func() {}
	if err := ctx.Err(); err != nil {
		return ports.AnswerCatchUp{}, nothing, err
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if messageID == "" {
		messageID = a.latest[threadID]
	}
	k := answerKey(threadID, messageID)
	l := a.answers[k]
	if l == nil || !now.Before(l.expires) {
		if l != nil {
			a.forgetLocked(k, l)
		}
		return ports.AnswerCatchUp{}, nothing, nil
	}
	c := ports.AnswerCatchUp{Found: true, MessageID: l.msg, Epoch: l.epoch, Top: l.top, Done: l.done, Text: l.text.String()}
	c.Entries, c.Complete = after1(l.entries, after, l.top, l.done)
	if l.done {
		return c, nothing, nil
	}
	l.next++
	id := l.next
	l.followers[id] = deliver
	var once sync.Once
	return c, func() {
		once.Do(func() {
			a.mu.Lock()
			delete(l.followers, id)
			a.mu.Unlock()
		})
	}, nil
}

// after1 returns the entries after seq after, and whether they are all
// there: the first kept follows after at once, or nothing followed it.
func after1(entries []ports.AnswerEntry, after, top int64, done bool) ([]ports.AnswerEntry, bool) {
	i := 0
	for i < len(entries) && entries[i].Final == nil && entries[i].Seq <= after {
		i++
	}
	rest := entries[i:]
	switch {
	case after > top:
		return nil, false // the client saw more than was logged
	case len(rest) == 0:
		return nil, after == top && !done
	case rest[0].Final == nil && rest[0].Seq != after+1, rest[0].Final != nil && rest[0].Seq != after:
		return nil, false // trimmed
	}
	return append([]ports.AnswerEntry(nil), rest...), true
}
