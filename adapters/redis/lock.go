package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

var _ ports.ThreadLock = (*Lock)(nil)

// LockConfig configures a Lock.
type LockConfig struct {
	// Client is the shared Redis client. Required.
	Client rueidis.Client
	// Prefix is put before every key; empty means "ws:". It must not
	// contain a brace.
	Prefix string
	// OnError is told the operation of every failed Redis call (metrics).
	// Nil ignores them.
	OnError func(op string)
}

// Lock is the thread lock shared by every instance: one Redis key per
// locked thread, set with NX and an expiry. The key's value is a random
// token per acquisition (after the owner, for whoever inspects Redis), and
// renewing or releasing first compares it, in one Lua script, so that a
// holder whose lease expired and was taken over can never extend or free
// the new holder's lease.
//
// Each acquisition also hands out a fencing token from a per-thread
// counter key (fence:{<thread>}), raised in the same script as the SET, so
// that a holder whose lease was lost cannot save after the new holder: the
// thread store refuses a turn with an older token.
type Lock struct {
	cfg LockConfig
}

// fenceKeyTTL is how long a thread's fence counter outlives its last
// acquisition. Tokens do not depend on it: they start from Redis's clock,
// so that a counter that expired, or a Redis that restarted empty, still
// hands out tokens above every earlier one; the counter only orders
// acquisitions within one microsecond, or across a clock step back.
const fenceKeyTTL = 24 * time.Hour

// acquireScript sets the lock key unless it exists (nil then) and returns
// the lease's fencing token: the thread's counter plus one, or Redis's
// clock in microseconds when that is higher. Lua numbers are doubles:
// microseconds since 1970 stay exact (below 2^53) for centuries. The two
// keys carry the thread id as their hash tag, so on a Redis Cluster they
// sit in one slot, as a script's keys must.
var acquireScript = rueidis.NewLuaScript(takeLockLua("false"))

// takeLockLua is the Lua that takes the lock and returns its fencing
// token, or busy when the lock is held: KEYS lock, fence; ARGV value, ttl
// ms, fence ttl ms. The gate's script (gate.go) ends with it too.
func takeLockLua(busy string) string {
	return `
if not redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
	return ` + busy + `
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = redis.call("INCR", KEYS[2])
if n < now then
	n = now
	redis.call("SET", KEYS[2], string.format("%.0f", n))
end
redis.call("PEXPIRE", KEYS[2], ARGV[3])
return n
`
}

// renewScript extends the lease if the key still holds this lease's token:
// 1 when renewed, 0 when the lease is gone.
var renewScript = rueidis.NewLuaScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
`)

// releaseScript deletes the key if it still holds this lease's token: 1
// when deleted, 0 when the lease was already gone.
var releaseScript = rueidis.NewLuaScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

// NewLock returns a thread lock on cfg.Client. It holds no goroutine:
// renewing is the lease holder's job.
func NewLock(cfg LockConfig) (*Lock, error) {
	if cfg.Client == nil {
		return nil, errors.New("redis: lock needs a client")
	}
	prefix, err := checkPrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	cfg.Prefix = prefix
	if cfg.OnError == nil {
		cfg.OnError = func(string) {}
	}
	return &Lock{cfg: cfg}, nil
}

// Lease is a held thread lock.
type Lease struct {
	lock  *Lock
	key   string
	value string // owner + "/" + the acquisition's random token
	ttlMS string // the ttl in milliseconds, as PEXPIRE takes it
	fence int64
	// channel and alive are the thread queue's channel and alive hash
	// for a lease of TakeTurn, whose Release notifies the waiters; empty
	// for Acquire's.
	channel, alive string
}

var _ ports.Lease = (*Lease)(nil)

// Acquire takes the thread's lock for ttl (rounded up to a whole
// millisecond), unless a live lease holds it: then ErrThreadBusy. Redis
// failures are other errors. If the script's reply is lost on the way
// back, the key may have been set anyway; it then expires after ttl.
func (l *Lock) Acquire(ctx context.Context, threadID, owner string, ttl time.Duration) (ports.Lease, error) {
	if ttl <= 0 {
		return nil, errors.New("redis: lock ttl must be positive")
	}
	ms := max((ttl+time.Millisecond-1)/time.Millisecond, 1)
	lease := &Lease{
		lock: l,
		key:  tagged(l.cfg.Prefix, kindLock, threadID),
		// 128 random bits: no two acquisitions share a token.
		value: owner + "/" + rand.Text(),
		ttlMS: strconv.FormatInt(int64(ms), 10),
	}
	fence, err := acquireScript.Exec(ctx, l.cfg.Client, []string{lease.key, tagged(l.cfg.Prefix, kindFence, threadID)},
		[]string{lease.value, lease.ttlMS, strconv.FormatInt(fenceKeyTTL.Milliseconds(), 10)}).AsInt64()
	switch {
	case err == nil:
		lease.fence = fence
		return lease, nil
	case rueidis.IsRedisNil(err):
		return nil, conversation.ErrThreadBusy
	}
	l.cfg.OnError("lock_acquire")
	return nil, fmt.Errorf("redis: lock acquire: %w", err)
}

// Renew extends the lease by its ttl from now. It returns ErrLeaseLost
// when the lease expired or was released (whoever holds the thread now),
// and another error when Redis could not be asked.
func (le *Lease) Renew(ctx context.Context) error {
	c := le.lock.cfg.Client
	n, err := renewScript.Exec(ctx, c, []string{le.key}, []string{le.value, le.ttlMS}).AsInt64()
	if err != nil {
		le.lock.cfg.OnError("lock_renew")
		return fmt.Errorf("redis: lock renew: %w", err)
	}
	if n == 0 {
		return conversation.ErrLeaseLost
	}
	return nil
}

// Fence is the lease's fencing token.
func (le *Lease) Fence() int64 { return le.fence }

// Release frees the lock if this lease still holds it. Releasing a lease
// that expired, was taken over or was released already does nothing and
// is not an error. An error means Redis could not be asked, or its answer
// was lost: the release may be tried again (the conversation retries it
// until the lease expires after its ttl), since it compares the lease's
// own token and never frees a newer lease's lock. A lease of TakeTurn
// also tells the thread queue's watchers, in the same script, when tickets
// wait.
func (le *Lease) Release(ctx context.Context) error {
	c := le.lock.cfg.Client
	var err error
	if le.channel != "" {
		err = releaseNotifyScript.Exec(ctx, c, []string{le.key, le.alive}, []string{le.value, le.channel}).Error()
	} else {
		err = releaseScript.Exec(ctx, c, []string{le.key}, []string{le.value}).Error()
	}
	if err != nil {
		le.lock.cfg.OnError("lock_release")
		return fmt.Errorf("redis: lock release: %w", err)
	}
	return nil
}
