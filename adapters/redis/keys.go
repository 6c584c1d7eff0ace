package redis

import (
	"errors"
	"strings"
)

// DefaultPrefix is put before every key and channel when a Config's Prefix
// is empty.
const DefaultPrefix = "ws:"

// Every key or channel that belongs to a thread or a session carries the id
// as a hash tag, <prefix><kind>:{<id>}, so that on a Redis Cluster all the
// keys of one thread or session sit in one slot (the slot of the id), and a
// Lua script touching several of them (the lock and its fence) runs there.
// A thread's chat events go out on its session (session id = thread id),
// so a thread's keys sit with its session's too. The id may hold any byte:
// Redis hashes what lies between the first "{" and the first "}" after it,
// the same for every key of one id, so the keys of one id still share a
// slot, and the full names of two ids still differ.
const (
	kindSession  = "session"  // pub/sub channel of a session's broadcasts
	kindPresence = "presence" // hash: a session's connections
	kindLock     = "lock"     // string: a thread's lock
	kindFence    = "fence"    // counter: a thread's fencing tokens
	kindStop     = "stop"     // pub/sub channel: requests to stop a thread's answer

	// kindPubSub names the sharded pub/sub channel of a partition of the
	// sessions: its "id" is the partition's number.
	kindPubSub = "pubsub"
	// kindPubSubProbe names the channel in the slot of a partition's
	// channel on which the start-up probe publishes.
	kindPubSubProbe = "pubsub-probe"
	// kindPubSubLog names the stream of a partition that keeps its latest
	// broadcasts (partlog.go), in the slot of the partition's channel.
	kindPubSubLog = "pubsub-log"

	kindSessionOffset  = "session-offset"  // hash: a session history's epoch and top offset
	kindSessionHistory = "session-history" // stream: a session's latest broadcasts
)

// Keys of an instance, not of a session: tagged by the instance's token
// (presence_reap.go), plus the one registry of instances.
const (
	kindInstanceSessions = "instance-sessions" // set: the sessions an instance has entries on
	kindReaping          = "reaping"           // string: a dead instance's claim by one reaper
	keyInstances         = "instances"         // set: the tokens of the instances that keep presence
)

// tagged returns the name of id's key or channel of kind kind.
func tagged(prefix, kind, id string) string {
	return prefix + kind + ":{" + id + "}"
}

// checkPrefix returns prefix, or DefaultPrefix when it is empty, and
// refuses a prefix holding a brace: Redis Cluster would take the hash tag
// from the prefix, and every key of every id would fall in one slot.
func checkPrefix(prefix string) (string, error) {
	if prefix == "" {
		return DefaultPrefix, nil
	}
	if strings.ContainsAny(prefix, "{}") {
		return "", errors.New("redis: the key prefix must not contain '{' or '}' (a hash tag there would put every key in one cluster slot)")
	}
	return prefix, nil
}
