package ports

import "context"

// Position is a place in a session's numbered stream of broadcasts: the
// offset of a message, counted from 1 within an epoch. An epoch names one
// unbroken run of offsets; it changes whenever the keeper can no longer
// vouch that the offsets it hands out continue the ones it handed out
// before (its record was lost or expired, the process restarted), so that
// an offset is never read against the wrong run.
type Position struct {
	Offset uint64
	Epoch  string
}

// Numbered is a message whose offset is not known until the history gives
// it one: the message is Head, the offset in decimal, then Tail.
type Numbered struct {
	Head, Tail []byte
}

// Bytes returns the message with the given offset.
func (m Numbered) Bytes(offset uint64) []byte {
	b := make([]byte, 0, len(m.Head)+20+len(m.Tail))
	b = append(b, m.Head...)
	b = appendUint(b, offset)
	return append(b, m.Tail...)
}

func appendUint(b []byte, n uint64) []byte {
	var d [20]byte
	i := len(d)
	for {
		i--
		d[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(b, d[i:]...)
}

// Published is what a history tells of a broadcast it published.
type Published struct {
	// Position is the message's: its offset and epoch. It is zero when
	// the adapter cannot tell it (the reply was lost, though the message
	// went out and came back).
	Position
	// DeliverHere is true when the backend may not have handed the
	// message to this instance's subscription (it was being made): the
	// caller delivers it here itself, numbered, and the adapter drops it
	// should it come back after all. It then arrives after messages of
	// higher offsets, and to connections that may have read it from the
	// history already: the caller sorts that out.
	DeliverHere bool
}

// Recovery is what a history knows of a session for a connection that
// comes back.
type Recovery struct {
	// Top is the offset of the session's latest message (0 when none was
	// published in this epoch) and the current epoch.
	Top Position
	// Recovered is true when every message after the position asked for
	// is still kept: they are Messages, in order, up to Top.Offset.
	Recovered bool
	// Messages are the messages after the position asked for, as they
	// were published; empty unless Recovered.
	Messages [][]byte
}

// History numbers each session's broadcasts and keeps the latest of them
// for a while, so that a connection that comes back gets the ones it
// missed. Its publications travel like a Broker's, to the same
// subscriptions: the adapter shares the broker it was made with.
type History interface {
	// Publish gives msg the session's next offset, keeps it and sends it to
	// every instance subscribed to the session, in offset order: a
	// subscriber receives one session's numbered messages in the order of
	// their offsets, but for those the caller delivers itself. It fails
	// like Broker.Publish: when it returns an error the caller delivers the
	// message to this instance itself (it has no offset then), and the
	// adapter never delivers it here too.
	Publish(ctx context.Context, session string, msg Numbered) (Published, error)
	// Recover returns the session's current position, and, when from is
	// not nil, is in the current epoch and every message after it is still
	// kept, those messages. It starts an epoch when the session has none,
	// so that the position it returns holds for the offsets that follow.
	Recover(ctx context.Context, session string, from *Position) (Recovery, error)
}
