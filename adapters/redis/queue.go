package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.ThreadQueue = (*Queue)(nil)

// QueueConfig configures a Queue.
type QueueConfig struct {
	// Client is the shared Redis client. Required.
	Client rueidis.Client
	// Prefix is put before every key and channel; empty means "ws:".
	Prefix string
	// OnError is told the operation of every failed Redis call (metrics).
	// Nil ignores them.
	OnError func(op string)
	Log     *slog.Logger
}

// Queue is the thread queue shared by every instance. Each thread has
// three keys, hash-tagged on the thread so that one script touches one
// slot: <prefix>queue:{T} (a list: the tickets that wait, oldest first),
// <prefix>queue:{T}:front (a list: the tickets that go ahead of them) and
// <prefix>queue:{T}:alive (a hash: each ticket's expiry, in milliseconds
// of Redis's clock, so that no instance's clock matters). Every script
// first drops the tickets whose expiry passed; every write sets the three
// keys to expire after twice the ttl, so an abandoned queue disappears.
//
// Notify publishes on the channel <prefix>queue:{T}; Watch subscribes to
// it, one subscription per thread with watchers on this instance, on the
// client's pub/sub connection (rueidis Receive), made again when it is
// lost. Messages sent while a subscription is not in place are lost:
// waiters also look again at an interval (ports.ThreadQueue).
type Queue struct {
	cfg    QueueConfig
	prefix string
	ctx    context.Context // ends with Close: every subscription ends
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	watched map[string]*watch // by thread
}

// watch is one thread's watchers on this instance and its subscription.
type watch struct {
	chans  map[chan struct{}]struct{}
	cancel context.CancelFunc
}

// kindQueue names a thread's queue keys and its notification channel.
const kindQueue = "queue"

// dropExpired is the start of every script: it removes from both lists
// the tickets whose expiry passed. The lists are short (at most
// MAX_QUEUED_PER_THREAD and the interrupting chats).
const dropExpired = `
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 2 do
	for _, ticket in ipairs(redis.call("LRANGE", KEYS[i], 0, -1)) do
		local exp = tonumber(redis.call("HGET", KEYS[3], ticket) or "0")
		if exp <= now then
			redis.call("LREM", KEYS[i], 0, ticket)
			redis.call("HDEL", KEYS[3], ticket)
		end
	end
end
local function keep(ttl)
	for i = 1, 3 do
		redis.call("PEXPIRE", KEYS[i], 2 * ttl)
	end
end
`

// joinScript: ARGV ticket, front ("1" or "0"), limit, ttl in ms. It
// returns -1 when the ticket's list is full, -2 when the ticket waits
// already, else its place in the whole queue.
var joinScript = rueidis.NewLuaScript(dropExpired + `
local list = KEYS[1]
if ARGV[2] == "1" then list = KEYS[2] end
if redis.call("HEXISTS", KEYS[3], ARGV[1]) == 1 then return -2 end
if redis.call("LLEN", list) >= tonumber(ARGV[3]) then return -1 end
redis.call("RPUSH", list, ARGV[1])
redis.call("HSET", KEYS[3], ARGV[1], now + tonumber(ARGV[4]))
keep(tonumber(ARGV[4]))
if ARGV[2] == "1" then return redis.call("LLEN", KEYS[2]) end
return redis.call("LLEN", KEYS[2]) + redis.call("LLEN", KEYS[1])
`)

// keepScript: ARGV ticket, ttl in ms. 1 when kept, 0 when the ticket is
// gone.
var keepScript = rueidis.NewLuaScript(dropExpired + `
if redis.call("HEXISTS", KEYS[3], ARGV[1]) == 0 then return 0 end
redis.call("HSET", KEYS[3], ARGV[1], now + tonumber(ARGV[2]))
keep(tonumber(ARGV[2]))
return 1
`)

// headScript returns the first ticket, the front ones first, or false.
var headScript = rueidis.NewLuaScript(dropExpired + `
local h = redis.call("LINDEX", KEYS[2], 0)
if h then return h end
return redis.call("LINDEX", KEYS[1], 0)
`)

// leaveScript: ARGV ticket.
var leaveScript = rueidis.NewLuaScript(`
redis.call("LREM", KEYS[1], 0, ARGV[1])
redis.call("LREM", KEYS[2], 0, ARGV[1])
redis.call("HDEL", KEYS[3], ARGV[1])
return 1
`)

// NewQueue returns a thread queue on cfg.Client. Close ends its
// subscriptions.
func NewQueue(cfg QueueConfig) (*Queue, error) {
	if cfg.Client == nil {
		return nil, errors.New("redis: queue needs a client")
	}
	prefix, err := checkPrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	if cfg.OnError == nil {
		cfg.OnError = func(string) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Queue{cfg: cfg, prefix: prefix, ctx: ctx, stop: stop, watched: make(map[string]*watch)}, nil
}

// Close ends the subscriptions and waits for them. The client stays open:
// its owner closes it.
func (q *Queue) Close() {
	q.stop()
	q.wg.Wait()
}

// keys are the thread's list, front list and expiry hash.
func (q *Queue) keys(threadID string) []string {
	k := tagged(q.prefix, kindQueue, threadID)
	return []string{k, k + ":front", k + ":alive"}
}

func ms(d time.Duration) string {
	return strconv.FormatInt(int64(max((d+time.Millisecond-1)/time.Millisecond, 1)), 10)
}

// Join adds ticket to the thread's queue.
func (q *Queue) Join(ctx context.Context, threadID, ticket string, front bool, limit int, ttl time.Duration) (int, error) {
	if ttl <= 0 {
		return 0, errors.New("redis: queue ttl must be positive")
	}
	f := "0"
	if front {
		f = "1"
	}
	n, err := joinScript.Exec(ctx, q.cfg.Client, q.keys(threadID), []string{ticket, f, strconv.Itoa(limit), ms(ttl)}).AsInt64()
	switch {
	case err != nil:
		q.cfg.OnError("queue_join")
		return 0, fmt.Errorf("redis: queue join: %w", err)
	case n == -1:
		return 0, conversation.ErrQueueFull
	case n == -2:
		return 0, errors.New("redis: queue join: the ticket is in the queue already")
	}
	return int(n), nil
}

// Keep extends the ticket's ttl.
func (q *Queue) Keep(ctx context.Context, threadID, ticket string, ttl time.Duration) error {
	n, err := keepScript.Exec(ctx, q.cfg.Client, q.keys(threadID), []string{ticket, ms(ttl)}).AsInt64()
	if err != nil {
		q.cfg.OnError("queue_keep")
		return fmt.Errorf("redis: queue keep: %w", err)
	}
	if n == 0 {
		return conversation.ErrTicketLost
	}
	return nil
}

// Head returns the first live ticket, "" when none waits.
func (q *Queue) Head(ctx context.Context, threadID string) (string, error) {
	h, err := headScript.Exec(ctx, q.cfg.Client, q.keys(threadID), nil).ToString()
	if rueidis.IsRedisNil(err) {
		return "", nil
	}
	if err != nil {
		q.cfg.OnError("queue_head")
		return "", fmt.Errorf("redis: queue head: %w", err)
	}
	return h, nil
}

// Leave removes the ticket.
func (q *Queue) Leave(ctx context.Context, threadID, ticket string) error {
	if err := leaveScript.Exec(ctx, q.cfg.Client, q.keys(threadID), []string{ticket}).Error(); err != nil {
		q.cfg.OnError("queue_leave")
		return fmt.Errorf("redis: queue leave: %w", err)
	}
	return nil
}

// Notify publishes on the thread's channel, pinned to its slot on a Redis
// Cluster as the broker's publications are.
func (q *Queue) Notify(ctx context.Context, threadID string) error {
	c := q.cfg.Client
	ch := tagged(q.prefix, kindQueue, threadID)
	if err := c.Do(ctx, c.B().Publish().Channel(ch).Message("free").Build().SetSlot(ch)).Error(); err != nil {
		q.cfg.OnError("queue_notify")
		return fmt.Errorf("redis: queue notify: %w", err)
	}
	return nil
}

// Watch returns a channel that receives after Notify on the thread, from
// any instance, until stop.
func (q *Queue) Watch(threadID string) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	q.mu.Lock()
	w := q.watched[threadID]
	if w == nil {
		ctx, cancel := context.WithCancel(q.ctx)
		w = &watch{chans: make(map[chan struct{}]struct{}), cancel: cancel}
		q.watched[threadID] = w
		q.wg.Add(1)
		go q.listen(ctx, threadID)
	}
	w.chans[ch] = struct{}{}
	q.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			delete(w.chans, ch)
			if len(w.chans) == 0 && q.watched[threadID] == w {
				delete(q.watched, threadID)
				w.cancel()
			}
		})
	}
}

// listen holds the thread's subscription until ctx ends, making it again
// after a failure.
func (q *Queue) listen(ctx context.Context, threadID string) {
	defer q.wg.Done()
	c := q.cfg.Client
	ch := tagged(q.prefix, kindQueue, threadID)
	wait := 50 * time.Millisecond
	for {
		err := c.Receive(ctx, c.B().Subscribe().Channel(ch).Build(), func(rueidis.PubSubMessage) { q.deliver(threadID) })
		if ctx.Err() != nil {
			return
		}
		// Without an error the channel was unsubscribed, not lost: the
		// subscription of this thread's previous watchers, ending as
		// these began, unsubscribed it. Subscribe again almost at once.
		pause := 10 * time.Millisecond
		if err != nil {
			q.cfg.OnError("queue_subscribe")
			q.cfg.Log.WarnContext(ctx, "thread queue subscription lost; subscribing again", "thread_id", threadID, "err", err)
			pause, wait = wait, min(2*wait, 2*time.Second)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// deliver wakes the thread's watchers on this instance.
func (q *Queue) deliver(threadID string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w := q.watched[threadID]; w != nil {
		for ch := range w.chans {
			select {
			case ch <- struct{}{}:
			default: // one is pending already: notifications merge
			}
		}
	}
}
