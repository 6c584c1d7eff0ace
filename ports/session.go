// Package ports declares the interfaces between wsserver's core and the
// technology around it. The core needs them; adapters fill them.
package ports

import (
	"context"
	"time"
)

// Delivery is one broadcast as an instance receives it.
type Delivery struct {
	// Payload is the encoded message, exactly as it was published.
	Payload []byte
	// Sent is when the publishing instance handed the message to the broker.
	Sent time.Time
}

// Broker carries a session's broadcasts to every instance that has
// subscribers on it. A message is published once, whatever the number of
// instances or sockets, and delivered at most once to each subscribed
// instance. Messages published by one caller in sequence are delivered in
// that order.
type Broker interface {
	// Publish sends payload to every instance subscribed to session,
	// this one included when it is subscribed. When it returns an error,
	// the caller delivers payload to this instance's subscribers itself:
	// the adapter must then never deliver it here too, even if it did
	// reach the backend (a reply lost after the command went out).
	Publish(ctx context.Context, session string, payload []byte) error
	// Subscribe makes this instance receive the session's broadcasts through
	// deliver until Unsubscribe. It does not wait for the backend, so it may
	// be called under the caller's lock: the adapter keeps the set of wanted
	// sessions and converges to it, also after losing and regaining its
	// backend. The returned channel is closed once deliveries flow (at once
	// for an in-process broker). deliver must not block; it may be called
	// from several goroutines at once, but the messages of one publisher
	// reach it in order.
	Subscribe(session string, deliver func(Delivery)) (live <-chan struct{})
	// Unsubscribe stops the deliveries of session to this instance.
	Unsubscribe(session string)
}

// Member is one connection present on a session.
type Member struct {
	ConnectionID string
	UserType     string
	// ClientType is empty when the client gave none.
	ClientType string
	// PresenceKey names the person behind the connection, the same on
	// each of their tabs (PROTOCOL.md §4.7); empty when the client gave none.
	PresenceKey string
}

// Presence records which connections are on each session, across instances.
// Entries added by an instance that stops without removing them disappear
// within the adapter's time to live; clean removals are visible at once.
type Presence interface {
	// Add records m on session.
	Add(ctx context.Context, session string, m Member) error
	// Remove forgets the connection connID on session.
	Remove(ctx context.Context, session string, connID string) error
	// List returns every live member of session on every instance, in no
	// particular order.
	List(ctx context.Context, session string) ([]Member, error)
}

// PresenceReaper is a Presence shared by several instances that finds the
// members of an instance that died without removing them.
type PresenceReaper interface {
	// Reap removes the members of every instance found dead since the
	// last call, on any instance, and returns them by session. Each dead
	// instance is claimed by exactly one call, on one instance, however
	// many instances reap at once: its members are returned once in all.
	Reap(ctx context.Context) (map[string][]Member, error)
}
