package porttest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/ports"
)

// HistoryInstance is a history with the broker its publications travel on,
// as one server instance has them.
type HistoryInstance struct {
	Broker  ports.Broker
	History ports.History
}

// HistoryInstances returns two instances sharing a backend, their
// histories keeping size broadcasts per session for ttl. second is the
// zero value for in-process adapters.
type HistoryInstances func(t *testing.T, size int, ttl time.Duration) (first, second HistoryInstance)

// numbered is a message whose offset the history fills in.
func numbered(text string) ports.Numbered {
	return ports.Numbered{Head: []byte(`{"offset":`), Tail: []byte(`,"text":` + strconv.Quote(text) + `}`)}
}

func numberedAt(text string, offset uint64) string { return string(numbered(text).Bytes(offset)) }

// History runs the history contract on the adapter that newHistories makes.
func History(t *testing.T, newHistories HistoryInstances) {
	ctx := context.Background()
	const long = time.Hour

	publish := func(t *testing.T, h ports.History, s string, texts ...string) ports.Position {
		t.Helper()
		var pos ports.Position
		for _, x := range texts {
			p, err := h.Publish(ctx, s, numbered(x))
			require.NoError(t, err)
			pos = p.Position
		}
		return pos
	}
	recover := func(t *testing.T, h ports.History, s string, from *ports.Position) ports.Recovery {
		t.Helper()
		rec, err := h.Recover(ctx, s, from)
		require.NoError(t, err)
		return rec
	}
	texts := func(rec ports.Recovery) []string {
		var out []string
		for _, m := range rec.Messages {
			out = append(out, string(m))
		}
		return out
	}

	t.Run("numbers from 1 in one epoch and delivers the numbered message", func(t *testing.T) {
		a, _ := newHistories(t, 10, long)
		s, in := session(t), newInbox()
		waitLive(t, a.Broker.Subscribe(s, in.deliver))
		fresh := recover(t, a.History, s, nil)
		assert.Equal(t, uint64(0), fresh.Top.Offset)
		assert.NotEmpty(t, fresh.Top.Epoch)
		assert.False(t, fresh.Recovered)

		p1 := publish(t, a.History, s, "one")
		p2 := publish(t, a.History, s, "two")
		assert.Equal(t, ports.Position{Offset: 1, Epoch: fresh.Top.Epoch}, p1, "the epoch a read started holds for the offsets that follow")
		assert.Equal(t, ports.Position{Offset: 2, Epoch: fresh.Top.Epoch}, p2)
		assert.Equal(t, []string{numberedAt("one", 1), numberedAt("two", 2)}, in.waitFor(t, 2))
	})

	t.Run("recovers what came after a position", func(t *testing.T) {
		a, _ := newHistories(t, 10, long)
		s := session(t)
		top := publish(t, a.History, s, "1", "2", "3", "4")
		at := func(o uint64) *ports.Position { return &ports.Position{Offset: o, Epoch: top.Epoch} }

		rec := recover(t, a.History, s, at(1))
		assert.True(t, rec.Recovered)
		assert.Equal(t, top, rec.Top)
		assert.Equal(t, []string{numberedAt("2", 2), numberedAt("3", 3), numberedAt("4", 4)}, texts(rec))

		rec = recover(t, a.History, s, at(0))
		assert.True(t, rec.Recovered)
		assert.Len(t, rec.Messages, 4)

		rec = recover(t, a.History, s, at(4))
		assert.True(t, rec.Recovered, "nothing missed is recovered")
		assert.Empty(t, rec.Messages)

		for name, from := range map[string]*ports.Position{
			"no position":         nil,
			"beyond the top":      at(5),
			"of another epoch":    {Offset: 1, Epoch: top.Epoch + "x"},
			"of another epoch, 0": {Offset: 0, Epoch: "other"},
		} {
			rec := recover(t, a.History, s, from)
			assert.False(t, rec.Recovered, name)
			assert.Empty(t, rec.Messages, name)
			assert.Equal(t, top, rec.Top, name)
		}
	})

	t.Run("keeps only the latest size", func(t *testing.T) {
		a, _ := newHistories(t, 3, long)
		s := session(t)
		top := publish(t, a.History, s, "1", "2", "3", "4", "5")
		rec := recover(t, a.History, s, &ports.Position{Offset: 1, Epoch: top.Epoch})
		assert.False(t, rec.Recovered, "offset 2 was trimmed")
		assert.Empty(t, rec.Messages)
		rec = recover(t, a.History, s, &ports.Position{Offset: 2, Epoch: top.Epoch})
		assert.True(t, rec.Recovered)
		assert.Equal(t, []string{numberedAt("3", 3), numberedAt("4", 4), numberedAt("5", 5)}, texts(rec))
	})

	t.Run("keeps sessions apart", func(t *testing.T) {
		a, _ := newHistories(t, 10, long)
		s1, s2 := session(t), session(t)
		publish(t, a.History, s1, "a", "b")
		p := publish(t, a.History, s2, "c")
		assert.Equal(t, uint64(1), p.Offset)
		rec := recover(t, a.History, s2, &ports.Position{Offset: 0, Epoch: p.Epoch})
		assert.Equal(t, []string{numberedAt("c", 1)}, texts(rec))
	})

	t.Run("forgets a session after its ttl, in a new epoch", func(t *testing.T) {
		const ttl = 100 * time.Millisecond
		a, _ := newHistories(t, 10, ttl)
		s := session(t)
		old := publish(t, a.History, s, "1", "2")
		// A read renews the history, so nothing may touch it until the
		// ttl has surely passed: the wait is on the clock, as expiry is.
		last := time.Now()
		for time.Since(last) < 3*ttl {
			time.Sleep(ttl)
		}
		rec := recover(t, a.History, s, &ports.Position{Offset: 1, Epoch: old.Epoch})
		assert.NotEqual(t, old.Epoch, rec.Top.Epoch, "a new epoch")
		assert.False(t, rec.Recovered)
		assert.Empty(t, rec.Messages)
		assert.Equal(t, uint64(0), rec.Top.Offset)
		p := publish(t, a.History, s, "new")
		assert.Equal(t, ports.Position{Offset: 1, Epoch: rec.Top.Epoch}, p)
	})

	t.Run("a publication that fails is not delivered here", func(t *testing.T) {
		a, _ := newHistories(t, 10, long)
		s, in := session(t), newInbox()
		waitLive(t, a.Broker.Subscribe(s, in.deliver))
		done, cancel := context.WithCancel(ctx)
		cancel()
		_, err := a.History.Publish(done, s, numbered("lost"))
		require.Error(t, err)
		p := publish(t, a.History, s, "marker")
		got := in.waitFor(t, 1)
		assert.Equal(t, []string{numberedAt("marker", p.Offset)}, got)
	})

	t.Run("concurrent publishers, on every instance, are delivered to each in offset order", func(t *testing.T) {
		a, b := newHistories(t, 1000, long)
		instances := []HistoryInstance{a}
		if b.History != nil {
			instances = append(instances, b)
		}
		s := session(t)
		inboxes := make([]*inbox, len(instances))
		for i, in := range instances {
			inboxes[i] = newInbox()
			waitLive(t, in.Broker.Subscribe(s, inboxes[i].deliver))
		}
		const publishers, each = 4, 100
		var wg sync.WaitGroup
		for p := range publishers {
			h := instances[p%len(instances)].History
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range each {
					pub, err := h.Publish(ctx, s, numbered(fmt.Sprintf("%d-%d", p, n)))
					assert.NoError(t, err)
					assert.False(t, pub.DeliverHere, "the subscription was live: the backend delivers")
				}
			}()
		}
		wg.Wait()
		const total = publishers * each
		for i, in := range inboxes {
			got := in.waitFor(t, total)
			for n, m := range got {
				require.Contains(t, m, fmt.Sprintf(`{"offset":%d,`, n+1), "instance %d, delivery %d", i, n)
			}
		}
		last := instances[len(instances)-1].History
		rec := recover(t, last, s, &ports.Position{Offset: 0, Epoch: recover(t, a.History, s, nil).Top.Epoch})
		require.True(t, rec.Recovered)
		assert.Equal(t, inboxes[0].all(), texts(rec), "the history holds what was delivered, in the same order")
	})
}
