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

var _ ports.ThreadGate = (*Lock)(nil)

// takeScript is acquireScript behind a look at the thread's queue (the
// keys of Queue, queue.go), in one script: KEYS lock, fence, queue, front,
// alive; ARGV value, ttl in ms, the fence key's ttl in ms, ticket. It
// returns -2 when the head of the queue is not ARGV[4] ("" for an empty
// queue), -1 when the lock is held, else the lease's fencing token. A
// thread nobody waits for has no alive hash: its chat pays one EXISTS for
// the look, not the expired tickets' sweep.
var takeScript = rueidis.NewLuaScript(`
local head = ""
if redis.call("EXISTS", KEYS[5]) == 1 then
	local t = redis.call("TIME")
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	for i = 3, 4 do
		for _, ticket in ipairs(redis.call("LRANGE", KEYS[i], 0, -1)) do
			local exp = tonumber(redis.call("HGET", KEYS[5], ticket) or "0")
			if exp <= now then
				redis.call("LREM", KEYS[i], 0, ticket)
				redis.call("HDEL", KEYS[5], ticket)
			end
		end
	end
	head = redis.call("LINDEX", KEYS[4], 0) or redis.call("LINDEX", KEYS[3], 0) or ""
end
if head ~= ARGV[4] then
	return -2
end
` + takeLockLua("-1"))

// releaseNotifyScript is releaseScript, then, when tickets wait in the
// thread's queue (its alive hash exists), Queue.Notify's publication:
// KEYS lock, alive; ARGV value, the queue's channel.
var releaseNotifyScript = rueidis.NewLuaScript(`
local n = 0
if redis.call("GET", KEYS[1]) == ARGV[1] then
	n = redis.call("DEL", KEYS[1])
end
if redis.call("EXISTS", KEYS[2]) == 1 then
	redis.call("PUBLISH", ARGV[2], "free")
end
return n
`)

// TakeTurn takes the thread's lock as Acquire does, in the same script
// as a look at the thread's queue: the queue of a Queue with the Lock's
// prefix. It returns conversation.ErrWaitersAhead when another ticket
// heads the queue (or ticket, when not "", is not in it), and
// conversation.ErrThreadBusy when the lock is held. The lease's Release
// notifies the queue's watchers, in the same script, when tickets wait.
func (l *Lock) TakeTurn(ctx context.Context, threadID, owner, ticket string, ttl time.Duration) (ports.Lease, error) {
	if ttl <= 0 {
		return nil, errors.New("redis: lock ttl must be positive")
	}
	queue := tagged(l.cfg.Prefix, kindQueue, threadID)
	lease := &Lease{
		lock: l,
		key:  tagged(l.cfg.Prefix, kindLock, threadID),
		// 128 random bits: no two acquisitions share a token.
		value:   owner + "/" + rand.Text(),
		ttlMS:   ms(ttl),
		channel: queue,
		alive:   queue + ":alive",
	}
	n, err := takeScript.Exec(ctx, l.cfg.Client,
		[]string{lease.key, tagged(l.cfg.Prefix, kindFence, threadID), queue, queue + ":front", lease.alive},
		[]string{lease.value, lease.ttlMS, strconv.FormatInt(fenceKeyTTL.Milliseconds(), 10), ticket}).AsInt64()
	switch {
	case err != nil:
		l.cfg.OnError("lock_take")
		return nil, fmt.Errorf("redis: lock take: %w", err)
	case n == -2:
		return nil, conversation.ErrWaitersAhead
	case n == -1:
		return nil, conversation.ErrThreadBusy
	}
	lease.fence = n
	return lease, nil
}
