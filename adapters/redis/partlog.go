package redis

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The partition log (sharded pub/sub only).
//
// Redis drops the subscriptions of a shard channel itself when the
// channel's slot moves to another node: a failover inside the shard (the
// replica becomes the master) or a resharding. An instance then subscribes
// again on the slot's new master, and what is published there before it
// has done so reaches the others but not it, and nobody is told. So every
// broadcast on a partition channel is also appended to a stream in the
// channel's slot, the partition's log, by the script that publishes it:
// the log and the channel carry the same messages in the same order, and
// the log moves with the slot (a replica has it; CLUSTER FAILOVER waits
// until the replica has all of it). Each message on the channel starts
// with its entry's id. An instance remembers the id of the last entry it
// got on each partition; once subscribed again, it reads the entries after
// it, delivers them, and then what came live meanwhile, dropping what it
// already has (an id not after the last). The log keeps entries for
// DefaultCatchUp (BrokerConfig.CatchUp): an instance away for longer loses
// the older ones, and logs it.
//
// A message on a partition channel:
//
//	byte 0      n, the length of the log entry's id (a stream id, "<ms>-<seq>")
//	bytes 1-n   the entry's id
//	then        the message as logged: the header, the session, the payload
//
// The message as logged starts with the header's time, whose top bit is
// set; n is below 128, so a message without the id (the version before the
// log) is told apart by its first byte.

// DefaultCatchUp is how long a partition's log keeps a broadcast when
// BrokerConfig.CatchUp is zero.
const DefaultCatchUp = 30 * time.Second

// entryID is a stream entry's id.
type entryID struct{ ms, seq uint64 }

func parseEntryID(s string) (entryID, error) {
	ms, seq, ok := strings.Cut(s, "-")
	if !ok {
		return entryID{}, fmt.Errorf("stream id %q", s)
	}
	var id entryID
	var err error
	if id.ms, err = strconv.ParseUint(ms, 10, 64); err != nil {
		return entryID{}, fmt.Errorf("stream id %q: %w", s, err)
	}
	if id.seq, err = strconv.ParseUint(seq, 10, 64); err != nil {
		return entryID{}, fmt.Errorf("stream id %q: %w", s, err)
	}
	return id, nil
}

func (id entryID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

func (id entryID) after(o entryID) bool {
	return id.ms > o.ms || id.ms == o.ms && id.seq > o.seq
}

// maxEntryIDLen bounds a stream id's length: two uint64 and a dash.
const maxEntryIDLen = 41

// splitLogged splits a message of a partition channel into its log
// entry's id and the message as logged. ok is false when it carries no id
// (the version before the log): msg is then all of it.
func splitLogged(body string) (id entryID, msg string, ok bool, err error) {
	if body == "" || body[0]&0x80 != 0 {
		return entryID{}, body, false, nil
	}
	n := int(body[0])
	if n == 0 || n > maxEntryIDLen || len(body) < 1+n {
		return entryID{}, "", false, fmt.Errorf("log id length %d in a message of %d bytes", n, len(body))
	}
	id, err = parseEntryID(body[1 : 1+n])
	if err != nil {
		return entryID{}, "", false, err
	}
	return id, body[1+n:], true, nil
}

// spublishScript appends a message to its partition's log, trimmed to the
// entries of the last catch-up window, and publishes it on the partition's
// channel with the entry's id in front.
// KEYS: the log. ARGV: the channel, the message, the window in ms, the
// log's TTL in ms. Returns the entry's id.
var spublishScript = rueidis.NewLuaScript(spublishSource)

const spublishSource = `
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call("XADD", KEYS[1], "MINID", "~", string.format("%d", now - tonumber(ARGV[3])), "*", "m", ARGV[2])
redis.call("PEXPIRE", KEYS[1], ARGV[4])
redis.call("SPUBLISH", ARGV[1], string.char(#id) .. id .. ARGV[2])
return id
`

// logOf names the log of the partition whose channel is ch: the same hash
// tag, so the same slot.
func (b *Broker) logOf(p int) string {
	return tagged(b.cfg.Prefix, kindPubSubLog, strconv.Itoa(p))
}

// spublish appends msg to partition p's log and publishes it on the
// partition's channel ch.
func (b *Broker) spublish(ctx context.Context, p int, ch string, msg []byte) error {
	return spublishScript.Exec(ctx, b.cfg.Client, []string{b.logOf(p)}, []string{
		ch, rueidis.BinaryString(msg), b.catchUpMS, b.logTTLMS,
	}).Error()
}

// logged is a message of a partition's log.
type logged struct {
	id  entryID
	msg string
}

// catchUp runs on l's connection dc right after its SSUBSCRIBE was
// answered, while the messages that come on it wait in l.held. fresh: the
// partition was not wanted here until now, so nothing before is due; it
// reads the log's last id as the position (the messages that came on the
// subscription before are all delivered: they were published after it).
// Otherwise it delivers the log's entries after the last one delivered
// here. Then what waited, if not delivered by now. The reads go on dc,
// after the SSUBSCRIBE, so Redis sends every message published before a
// read ahead of its reply, and every later one after it.
func (b *Broker) catchUp(ctx context.Context, l *link, dc rueidis.DedicatedClient, fresh bool) error {
	key := b.logOf(l.part)
	if fresh {
		last, err := dc.Do(ctx, dc.B().Xrevrange().Key(key).End("+").Start("-").Count(1).Build()).AsXRange()
		if err != nil {
			return fmt.Errorf("read the partition log's end: %w", err)
		}
		end := entryID{}
		if len(last) > 0 {
			if end, err = parseEntryID(last[0].ID); err != nil {
				return fmt.Errorf("read the partition log's end: %w", err)
			}
		}
		l.logMu.Lock()
		defer l.logMu.Unlock()
		for _, m := range l.held { // l.placed is false: each is delivered
			b.take(l, m.id, m.msg)
		}
		if end.after(l.pos) {
			l.pos = end
		}
		l.placed = true
		l.catching, l.held, l.lostAt = false, nil, time.Time{}
		return nil
	}

	l.logMu.Lock()
	from := l.pos
	l.logMu.Unlock()
	entries, err := dc.Do(ctx, dc.B().Xrange().Key(key).Start("("+from.String()).End("+").Build()).AsXRange()
	if err != nil {
		return fmt.Errorf("read the partition log: %w", err)
	}
	l.logMu.Lock()
	defer l.logMu.Unlock()
	if away := time.Since(l.lostAt); !l.lostAt.IsZero() && away > b.cfg.CatchUp {
		b.cfg.OnError("pubsub_catch_up")
		b.cfg.Log.WarnContext(ctx, "resubscribed after longer than the partition log keeps broadcasts: some may be lost here",
			"partition", l.part, "away", away, "kept", b.cfg.CatchUp)
	}
	for _, e := range entries {
		id, err := parseEntryID(e.ID)
		if err != nil {
			return fmt.Errorf("read the partition log: %w", err)
		}
		b.take(l, id, e.FieldValues["m"])
	}
	for _, m := range l.held {
		b.take(l, m.id, m.msg)
	}
	l.catching, l.held, l.lostAt = false, nil, time.Time{}
	if n := len(entries); n > 0 {
		b.cfg.Log.InfoContext(ctx, "caught up with a partition's log after resubscribing", "partition", l.part, "entries", n)
	}
	return nil
}

// take delivers the message of entry id of l's log, unless it was
// delivered here already. The caller holds l.logMu.
func (b *Broker) take(l *link, id entryID, msg string) {
	if l.placed && !id.after(l.pos) {
		return
	}
	l.pos = id
	b.receive("", msg)
}
