package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.AnswerLog = (*Answers)(nil)

// AnswersConfig configures an Answers.
type AnswersConfig struct {
	// Client is the shared Redis client. Required.
	Client rueidis.Client
	// Prefix is put before every key and channel; empty means "ws:".
	Prefix string
	// TTL is how long an answer is kept after its last entry
	// (RESUME_TTL); zero means 300 seconds.
	TTL time.Duration
	// MaxEvents bounds the entries kept per answer (RESUME_MAX_EVENTS);
	// zero means 1000.
	MaxEvents int
	// OnError is told the operation of every failed Redis call (metrics).
	// Nil ignores them.
	OnError func(op string)
	Log     *slog.Logger
}

// Answers is the answer log on Redis, shared by every instance. Each
// answer has, all tagged with its thread so that they share a cluster
// slot:
//
//	<prefix>answer:{T}:<M>       a Stream of its entries, ids <seq>-0 for tokens and <top>-1 for the final one, MAXLEN MaxEvents
//	<prefix>answer:{T}:<M>:meta  a hash: epoch, top, state (streaming, done), message_id
//	<prefix>answer:{T}:<M>:text  a string: every token's text, appended (the snapshot)
//	<prefix>answer-latest:{T}    a string: the thread's latest answer's message id
//
// and a pub/sub channel <prefix>answer:{T}:<M> on which the appended
// entries go out. One Lua script appends, refreshes every TTL and
// publishes, so that a follower sees every entry once: those written
// before a read in that read, those after its subscription on the channel
// (Follow reads once before the subscription is live, and once after).
type Answers struct {
	cfg  AnswersConfig
	subs *subscriber
	// The followers' gap reads (Follow) end with ctx, on Close.
	ctx  context.Context
	stop context.CancelFunc
	gaps sync.WaitGroup
}

// NewAnswers starts an answer log on cfg.Client. Close stops it.
func NewAnswers(cfg AnswersConfig) (*Answers, error) {
	if cfg.Client == nil {
		return nil, errors.New("redis: answers needs a client")
	}
	prefix, err := checkPrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	cfg.Prefix = prefix
	if cfg.TTL < 0 || cfg.MaxEvents < 0 {
		return nil, errors.New("redis: answers: ttl and max events must not be negative")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 300 * time.Second
	}
	if cfg.MaxEvents == 0 {
		cfg.MaxEvents = 1000
	}
	if cfg.OnError == nil {
		cfg.OnError = func(string) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Answers{cfg: cfg, subs: newSubscriber(cfg.Client, cfg.OnError, "answer_subscribe", cfg.Log), ctx: ctx, stop: stop}, nil
}

// Close stops the followers' subscriptions. The client stays open.
func (a *Answers) Close() {
	a.stop()
	a.gaps.Wait()
	a.subs.close()
}

const (
	kindAnswer       = "answer"
	kindAnswerLatest = "answer-latest"
)

func (a *Answers) keys(thread, msg string) (stream, meta, text, latest string) {
	stream = tagged(a.cfg.Prefix, kindAnswer, thread) + ":" + msg
	return stream, stream + ":meta", stream + ":text", tagged(a.cfg.Prefix, kindAnswerLatest, thread)
}

// appendScript logs a batch of entries. KEYS: stream, meta, text, latest.
// ARGV: epoch, ttl ms, maxlen, message id, channel, final frames ("" for
// none), final seq, then seq and text of each token. Tokens at or below
// the top, and anything after the final entry, are skipped. A meta hash
// missing while the batch does not start the answer means the log was
// lost (expired, flushed): the answer gets a new epoch. It returns the
// answer's epoch.
var appendScript = rueidis.NewLuaScript(`
local m = redis.call("HMGET", KEYS[2], "epoch", "top", "state")
local ep, top = m[1], tonumber(m[2]) or 0
if m[3] == "done" then return ep end
local need = 1
if #ARGV >= 8 then need = tonumber(ARGV[8]) elseif ARGV[6] ~= "" then need = tonumber(ARGV[7]) + 1 end
if not ep then
	ep = ARGV[1]
	if need > 1 then
		local t = redis.call("TIME")
		ep = ep .. "." .. t[1] .. t[2]
	end
	redis.call("HSET", KEYS[2], "epoch", ep, "message_id", ARGV[4])
end
local out = {}
for i = 8, #ARGV, 2 do
	local s = tonumber(ARGV[i])
	if s > top then
		redis.call("XADD", KEYS[1], "MAXLEN", ARGV[3], ARGV[i] .. "-0", "t", ARGV[i+1])
		redis.call("APPEND", KEYS[3], ARGV[i+1])
		top = s
		out[#out+1] = "T" .. ARGV[i] .. ":" .. #ARGV[i+1] .. ":" .. ARGV[i+1]
	end
end
local state = "streaming"
if ARGV[6] ~= "" then
	redis.call("XADD", KEYS[1], "MAXLEN", ARGV[3], ARGV[7] .. "-1", "f", ARGV[6])
	state = "done"
	out[#out+1] = "F" .. ARGV[7] .. ":" .. #ARGV[6] .. ":" .. ARGV[6]
end
redis.call("HSET", KEYS[2], "top", top, "state", state)
redis.call("SET", KEYS[4], ARGV[4], "PX", ARGV[2])
for i = 1, 3 do redis.call("PEXPIRE", KEYS[i], ARGV[2]) end
if #out > 0 then redis.call("PUBLISH", ARGV[5], table.concat(out)) end
return ep
`)

// readScript reads an answer at once. KEYS: meta, text, stream. ARGV: the
// exclusive start of the range. It returns the meta fields (epoch, top,
// state, message_id), the text and the entries.
var readScript = rueidis.NewLuaScript(`
return {redis.call("HMGET", KEYS[1], "epoch", "top", "state", "message_id"), redis.call("GET", KEYS[2]), redis.call("XRANGE", KEYS[3], ARGV[1], "+")}
`)

// Append logs entries with one script call.
func (a *Answers) Append(ctx context.Context, key ports.AnswerKey, entries []ports.AnswerEntry) error {
	stream, meta, text, latest := a.keys(key.ThreadID, key.MessageID)
	args := []string{key.Epoch, strconv.FormatInt(a.cfg.TTL.Milliseconds(), 10), strconv.Itoa(a.cfg.MaxEvents), key.MessageID, stream, "", "0"}
	for _, e := range entries {
		if e.Final != nil {
			args[5], args[6] = string(e.Final), strconv.FormatInt(e.Seq, 10)
			break
		}
		args = append(args, strconv.FormatInt(e.Seq, 10), e.Text)
	}
	if err := appendScript.Exec(ctx, a.cfg.Client, []string{stream, meta, text, latest}, args).Error(); err != nil {
		a.cfg.OnError("answer_append")
		return fmt.Errorf("redis: answer append: %w", err)
	}
	return nil
}

// parseEntries reads a publication of appendScript.
func parseEntries(msg string) ([]ports.AnswerEntry, error) {
	var out []ports.AnswerEntry
	for msg != "" {
		kind := msg[0]
		seqS, rest, ok := strings.Cut(msg[1:], ":")
		if !ok {
			return nil, errors.New("no seq")
		}
		lenS, rest, ok := strings.Cut(rest, ":")
		if !ok {
			return nil, errors.New("no length")
		}
		seq, err1 := strconv.ParseInt(seqS, 10, 64)
		n, err2 := strconv.Atoi(lenS)
		if err1 != nil || err2 != nil || n < 0 || n > len(rest) {
			return nil, errors.New("bad seq or length")
		}
		switch kind {
		case 'T':
			out = append(out, ports.AnswerEntry{Seq: seq, Text: rest[:n]})
		case 'F':
			out = append(out, ports.AnswerEntry{Seq: seq, Final: []byte(rest[:n])})
		default:
			return nil, fmt.Errorf("unknown kind %q", kind)
		}
		msg = rest[n:]
	}
	return out, nil
}

// follow merges a follower's catch-up with the live entries.
type follow struct {
	mu       sync.Mutex
	caughtUp bool // the live entries go straight to deliver
	stopped  bool // stop was called: nothing more is delivered
	buffered []ports.AnswerEntry
	last     int64 // the last token's seq delivered or read
	ended    bool  // the final entry was delivered or read
	deliver  func(ports.AnswerEntry)
	remove   func() // ends the channel's subscription
}

// takeLocked delivers e unless it was read or delivered already, and ends
// the subscription with the final entry. It holds mu.
func (f *follow) takeLocked(e ports.AnswerEntry) {
	switch {
	case f.ended || f.stopped:
	case e.Final != nil:
		f.ended = true
		f.remove()
		f.deliver(e)
	case e.Seq > f.last:
		f.last = e.Seq
		f.deliver(e)
	}
}

// live takes a publication of the answer's channel.
func (f *follow) live(entries []ports.AnswerEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.caughtUp {
		f.buffered = append(f.buffered, entries...)
		return
	}
	for _, e := range entries {
		f.takeLocked(e)
	}
}

// catchUp delivers entries (what a read found after f.last), then the
// live entries buffered meanwhile, and from then on the live ones as they
// come.
func (f *follow) catchUp(entries []ports.AnswerEntry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range entries {
		f.takeLocked(e)
	}
	f.caughtUp = true
	for _, e := range f.buffered {
		f.takeLocked(e)
	}
	f.buffered = nil
}

func (f *follow) stop() {
	f.mu.Lock()
	f.stopped, f.buffered = true, nil
	f.mu.Unlock()
	f.remove()
}

// gapTries bounds the reads of a follower's gap (below); a follower whose
// reads all fail goes on with the live entries, as one whose pub/sub
// connection was lost does (docs/TECHNICAL.md, Resumable answers).
const gapTries = 5

// gapTimeout bounds one read of a follower's gap.
const gapTimeout = 3 * time.Second

// Follow reads the answer and returns at once what it holds after seq
// after (the catch-up, one round trip), while the answer's channel is
// subscribed beside it; once the subscription is live, a second read
// fetches what was appended between the first and the subscription (the
// gap), then deliver gets the live entries that neither read held. When
// the channel was subscribed already on this instance, the first read
// came after it and no second is needed.
func (a *Answers) Follow(ctx context.Context, threadID, messageID string, after int64, deliver func(ports.AnswerEntry)) (ports.AnswerCatchUp, func(), error) {
	nothing := func() {}
	c := a.cfg.Client
	if messageID == "" {
		_, _, _, latest := a.keys(threadID, "")
		m, err := c.Do(ctx, c.B().Get().Key(latest).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return ports.AnswerCatchUp{}, nothing, nil
		}
		if err != nil {
			a.cfg.OnError("answer_follow")
			return ports.AnswerCatchUp{}, nothing, fmt.Errorf("redis: answer follow: %w", err)
		}
		messageID = m
	}
	stream, meta, text, _ := a.keys(threadID, messageID)
	f := &follow{deliver: deliver}
	live, remove := a.subs.add(stream, func(msg string) {
		entries, err := parseEntries(msg)
		if err != nil {
			a.cfg.Log.WarnContext(ctx, "malformed answer publication", "err", err)
			return
		}
		f.live(entries)
	})
	f.remove = remove
	liveBefore := false
	select {
	case <-live:
		liveBefore = true
	default:
	}
	cu, err := a.read(ctx, meta, text, stream, after)
	if err != nil {
		remove()
		a.cfg.OnError("answer_follow")
		return ports.AnswerCatchUp{}, nothing, fmt.Errorf("redis: answer follow: %w", err)
	}
	if !cu.Found || cu.Done {
		remove()
		return cu, nothing, nil
	}
	f.last = cu.Top
	if cu.Complete && len(cu.Entries) > 0 {
		f.last = max(f.last, cu.Entries[len(cu.Entries)-1].Seq)
	}
	if liveBefore {
		f.catchUp(nil)
		return cu, f.stop, nil
	}
	gctx, cancel := context.WithCancel(a.ctx)
	a.gaps.Add(1)
	go func() {
		defer a.gaps.Done()
		a.fillGap(gctx, ctx, f, live, meta, text, stream)
	}()
	return cu, func() {
		cancel()
		f.stop()
	}, nil
}

// read runs readScript: what the log holds of an answer after seq after.
func (a *Answers) read(ctx context.Context, meta, text, stream string, after int64) (ports.AnswerCatchUp, error) {
	reply, err := readScript.Exec(ctx, a.cfg.Client, []string{meta, text, stream}, []string{"(" + strconv.FormatInt(after, 10) + "-0"}).ToArray()
	if err != nil {
		return ports.AnswerCatchUp{}, err
	}
	return readCatchUp(reply, after)
}

// fillGap waits for f's subscription to be live, then reads what was
// appended since f's first read and hands it and the live entries to f.
func (a *Answers) fillGap(ctx, logCtx context.Context, f *follow, live <-chan struct{}, meta, text, stream string) {
	select {
	case <-live:
	case <-ctx.Done():
		return
	}
	f.mu.Lock()
	after := f.last
	f.mu.Unlock()
	backoff := minBackoff
	for try := 1; ; try++ {
		rctx, cancel := context.WithTimeout(ctx, gapTimeout)
		cu, err := a.read(rctx, meta, text, stream, after)
		cancel()
		if err == nil {
			if cu.Found && !cu.Complete {
				a.cfg.Log.WarnContext(logCtx, "answer log lost entries while a follower joined; it goes on with the live ones")
			}
			f.catchUp(cu.Entries)
			return
		}
		if ctx.Err() != nil {
			return
		}
		a.cfg.OnError("answer_follow")
		if try == gapTries {
			a.cfg.Log.WarnContext(logCtx, "answer follow: the entries since the catch-up could not be read; going on with the live ones", "err", err)
			f.catchUp(nil)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// readCatchUp makes the catch-up of readScript's reply.
func readCatchUp(reply []rueidis.RedisMessage, after int64) (ports.AnswerCatchUp, error) {
	if len(reply) != 3 {
		return ports.AnswerCatchUp{}, errors.New("unexpected reply")
	}
	fields, err := reply[0].ToArray()
	if err != nil || len(fields) != 4 {
		return ports.AnswerCatchUp{}, errors.New("unexpected meta")
	}
	epoch, err := fields[0].ToString()
	if err != nil {
		return ports.AnswerCatchUp{}, nil // no meta: nothing known
	}
	topS, _ := fields[1].ToString()
	state, _ := fields[2].ToString()
	msg, _ := fields[3].ToString()
	top, _ := strconv.ParseInt(topS, 10, 64)
	txt, _ := reply[1].ToString()
	cu := ports.AnswerCatchUp{Found: true, MessageID: msg, Epoch: epoch, Top: top, Done: state == "done", Text: txt}
	xs, err := reply[2].AsXRange()
	if err != nil {
		return ports.AnswerCatchUp{}, fmt.Errorf("read entries: %w", err)
	}
	entries := make([]ports.AnswerEntry, 0, len(xs))
	for _, x := range xs {
		seqS, kind, _ := strings.Cut(x.ID, "-")
		seq, err := strconv.ParseInt(seqS, 10, 64)
		if err != nil {
			return ports.AnswerCatchUp{}, fmt.Errorf("entry id %q", x.ID)
		}
		if kind == "1" {
			entries = append(entries, ports.AnswerEntry{Seq: seq, Final: []byte(x.FieldValues["f"])})
		} else {
			entries = append(entries, ports.AnswerEntry{Seq: seq, Text: x.FieldValues["t"]})
		}
	}
	switch {
	case after > top:
	case len(entries) == 0:
		cu.Complete = after == top && !cu.Done
	case entries[0].Final == nil && entries[0].Seq != after+1, entries[0].Final != nil && entries[0].Seq != after:
	default:
		cu.Complete, cu.Entries = true, entries
	}
	return cu, nil
}
