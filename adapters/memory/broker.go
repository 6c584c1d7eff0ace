// Package memory holds in-process adapters: what one instance uses when no
// Redis or database is configured.
package memory

import (
	"context"
	"sync"
	"time"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.Broker = (*Broker)(nil)

// Broker delivers broadcasts within the process. Publish hands the message
// to the subscriber's deliver function on the caller's goroutine, so one
// publisher's messages arrive in order.
type Broker struct {
	mu   sync.RWMutex
	subs map[string]func(ports.Delivery)
}

// NewBroker returns an empty in-process broker.
func NewBroker() *Broker {
	return &Broker{subs: make(map[string]func(ports.Delivery))}
}

// closed is the live channel of every in-process subscription: live at once.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Publish delivers payload to the session's subscriber, if any. It fails
// only before delivering (ctx done), so a caller that delivers a failed
// publication itself never delivers it twice.
func (b *Broker) Publish(ctx context.Context, session string, payload []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.RLock()
	deliver := b.subs[session]
	b.mu.RUnlock()
	if deliver != nil {
		deliver(ports.Delivery{Payload: payload, Sent: time.Now()})
	}
	return nil
}

// Subscribe routes the session's messages to deliver.
func (b *Broker) Subscribe(session string, deliver func(ports.Delivery)) <-chan struct{} {
	b.mu.Lock()
	b.subs[session] = deliver
	b.mu.Unlock()
	return closed
}

// Unsubscribe stops routing the session's messages.
func (b *Broker) Unsubscribe(session string) {
	b.mu.Lock()
	delete(b.subs, session)
	b.mu.Unlock()
}
