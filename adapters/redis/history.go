package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.History = (*History)(nil)

// HistoryConfig configures a History.
type HistoryConfig struct {
	// Broker carries the publications, with its client, key prefix and
	// error reporting. Required.
	Broker *Broker
	// Size is how many broadcasts are kept per session. Required (> 0).
	Size int
	// TTL is how long a session's history is kept after its last
	// broadcast or read (rounded up to a millisecond). Required (> 0).
	TTL time.Duration
}

// History numbers each session's broadcasts and keeps the latest in Redis,
// shared by every instance. Two keys per session, in its slot (keys.go):
//
//	<prefix>session-offset:{S}   hash: epoch, top (the last offset given)
//	<prefix>session-history:{S}  stream: one entry per broadcast, id <offset>-0,
//	                             field m = the message; at most Size entries
//
// One Lua script per broadcast raises top, appends the numbered message to
// the stream (trimmed to Size), renews both keys' TTL and PUBLISHes it on
// the broker's channel with the broker's header, so the offsets, the
// stream and the order in which every subscriber receives the messages
// agree. When the hash is missing (a new session, or its TTL passed, or
// Redis lost it), the script starts a new epoch (a random id from the
// caller) and drops the stream: offsets restart at 1 under an epoch that
// no client holds.
type History struct {
	broker *Broker
	size   string
	ttlMS  string
}

// NewHistory returns a history publishing through cfg.Broker.
func NewHistory(cfg HistoryConfig) (*History, error) {
	switch {
	case cfg.Broker == nil:
		return nil, errors.New("redis: history needs a broker")
	case cfg.Size <= 0:
		return nil, errors.New("redis: history size must be positive")
	case cfg.TTL <= 0:
		return nil, errors.New("redis: history ttl must be positive")
	case cfg.Broker.sharded():
		// A partition's channel is not in the session's slot, so the
		// script that numbers and keeps a broadcast in the session's keys
		// cannot SPUBLISH it; publishing it apart would let two
		// broadcasts' offsets and deliveries disagree.
		return nil, errors.New("redis: a session history needs plain pub/sub (no sharded partitions)")
	}
	ms := max((cfg.TTL+time.Millisecond-1)/time.Millisecond, 1)
	return &History{
		broker: cfg.Broker,
		size:   strconv.Itoa(cfg.Size),
		ttlMS:  strconv.FormatInt(int64(ms), 10),
	}, nil
}

// keys are the session's offset hash and stream, in its slot.
func (h *History) keys(session string) []string {
	p := h.broker.cfg.Prefix
	return []string{tagged(p, kindSessionOffset, session), tagged(p, kindSessionHistory, session)}
}

// newEpoch is a candidate for a session's next epoch: used by the script
// only when the session has none.
func newEpoch() string { return strconv.FormatUint(rand.Uint64(), 36) }

// publishScript numbers, keeps and publishes one broadcast.
// KEYS: offset hash, stream. ARGV: channel, broker header, head, tail,
// candidate epoch, size, ttl in ms. Returns {offset, epoch}.
var publishScript = rueidis.NewLuaScript(publishSource)

const publishSource = `
local epoch = redis.call("HGET", KEYS[1], "epoch")
if not epoch then
	epoch = ARGV[5]
	redis.call("DEL", KEYS[2])
	redis.call("HSET", KEYS[1], "epoch", epoch, "top", 0)
end
local n = redis.call("HINCRBY", KEYS[1], "top", 1)
local msg = ARGV[3] .. string.format("%d", n) .. ARGV[4]
redis.call("XADD", KEYS[2], "MAXLEN", ARGV[6], string.format("%d-0", n), "m", msg)
redis.call("PEXPIRE", KEYS[1], ARGV[7])
redis.call("PEXPIRE", KEYS[2], ARGV[7])
redis.call("PUBLISH", ARGV[1], ARGV[2] .. msg)
return {n, epoch}
`

// Publish numbers msg, keeps it and publishes it, in one script. It fails
// like Broker.Publish. When the script's reply was lost but its echo came
// back, the publication went out: it succeeds with a zero Position. When
// this instance's subscription was not confirmed, Redis may not hand the
// message back: DeliverHere asks the caller to deliver it.
func (h *History) Publish(ctx context.Context, session string, msg ports.Numbered) (ports.Published, error) {
	var pos ports.Position
	keys := h.keys(session)
	p, err := h.broker.publish(ctx, session, 0, func(header []byte, ch string) ([]byte, error) {
		c := h.broker.cfg.Client
		res, err := publishScript.Exec(ctx, c, keys, []string{
			ch, rueidis.BinaryString(header),
			rueidis.BinaryString(msg.Head), rueidis.BinaryString(msg.Tail),
			newEpoch(), h.size, h.ttlMS,
		}).ToArray()
		if err != nil {
			return nil, err
		}
		if len(res) != 2 {
			return nil, fmt.Errorf("history script answered %d values", len(res))
		}
		n, err := res[0].AsInt64()
		if err != nil {
			return nil, err
		}
		epoch, err := res[1].ToString()
		if err != nil {
			return nil, err
		}
		pos = ports.Position{Offset: uint64(n), Epoch: epoch} //nolint:gosec // HINCRBY from 0 counts up: never negative
		return msg.Bytes(pos.Offset), nil
	})
	return ports.Published{Position: pos, DeliverHere: p.here}, err
}

// recoverScript returns a session's epoch and top, starting an epoch when
// it has none, and the messages after an offset of its epoch when the
// stream still holds every one of them. It renews both keys' TTL: a
// connection that read a position can count on its epoch for a TTL.
// KEYS: offset hash, stream. ARGV: candidate epoch, ttl in ms, the
// client's epoch ("" for none), the client's offset.
// Returns {epoch, top} or, recovered, {epoch, top, 1, messages...}.
var recoverScript = rueidis.NewLuaScript(`
local epoch = redis.call("HGET", KEYS[1], "epoch")
if not epoch then
	epoch = ARGV[1]
	redis.call("DEL", KEYS[2])
	redis.call("HSET", KEYS[1], "epoch", epoch, "top", 0)
	redis.call("PEXPIRE", KEYS[1], ARGV[2])
	return {epoch, 0}
end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
redis.call("PEXPIRE", KEYS[2], ARGV[2])
local top = tonumber(redis.call("HGET", KEYS[1], "top"))
if ARGV[3] ~= epoch then
	return {epoch, top}
end
local since = tonumber(ARGV[4])
if since > top then
	return {epoch, top}
end
local out = {epoch, top, 1}
if since == top then
	return out
end
local entries = redis.call("XRANGE", KEYS[2], string.format("%d", since + 1), string.format("%d", top))
if #entries ~= top - since or entries[1][1] ~= string.format("%d-0", since + 1) then
	return {epoch, top}
end
for _, e in ipairs(entries) do
	out[#out + 1] = e[2][2]
end
return out
`)

// Recover returns the session's position and what was missed after from.
func (h *History) Recover(ctx context.Context, session string, from *ports.Position) (ports.Recovery, error) {
	epoch, offset := "", "0"
	if from != nil {
		epoch, offset = from.Epoch, strconv.FormatUint(from.Offset, 10)
	}
	c := h.broker.cfg.Client
	res, err := recoverScript.Exec(ctx, c, h.keys(session), []string{newEpoch(), h.ttlMS, epoch, offset}).ToArray()
	if err != nil {
		h.broker.cfg.OnError("history_read")
		return ports.Recovery{}, fmt.Errorf("redis: history read: %w", err)
	}
	rec, err := parseRecovery(res)
	if err != nil {
		h.broker.cfg.OnError("history_read")
		return ports.Recovery{}, fmt.Errorf("redis: history read: %w", err)
	}
	return rec, nil
}

func parseRecovery(res []rueidis.RedisMessage) (ports.Recovery, error) {
	var rec ports.Recovery
	if len(res) < 2 {
		return rec, fmt.Errorf("script answered %d values", len(res))
	}
	epoch, err := res[0].ToString()
	if err != nil {
		return rec, err
	}
	top, err := res[1].AsInt64()
	if err != nil || top < 0 {
		return rec, fmt.Errorf("top %d: %w", top, err)
	}
	rec.Top = ports.Position{Offset: uint64(top), Epoch: epoch}
	if len(res) < 3 {
		return rec, nil
	}
	rec.Recovered = true
	rec.Messages = make([][]byte, 0, len(res)-3)
	for _, m := range res[3:] {
		b, err := m.AsBytes()
		if err != nil {
			return ports.Recovery{}, err
		}
		rec.Messages = append(rec.Messages, b)
	}
	return rec, nil
}
