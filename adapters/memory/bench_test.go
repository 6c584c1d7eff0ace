package memory_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/wsserver/wsserver/adapters/memory"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
)

type discard struct{}

func (discard) Send([]byte) {}

// BenchmarkBroadcastHistory is one broadcast through the hub on the
// in-process adapters, without a session history and with one keeping 100
// broadcasts: what numbering and keeping add to the publish path.
func BenchmarkBroadcastHistory(b *testing.B) {
	for _, size := range []int{0, 100} {
		for _, n := range []int{1, 1000} {
			b.Run(fmt.Sprintf("history=%d/subscribers=%d", size, n), func(b *testing.B) {
				broker := memory.NewBroker()
				cfg := session.HubConfig{Broker: broker, Presence: memory.NewPresence()}
				if size > 0 {
					h, err := memory.NewHistory(memory.HistoryConfig{Broker: broker, Size: size, TTL: time.Hour})
					if err != nil {
						b.Fatal(err)
					}
					cfg.History = h
				}
				hub, err := session.NewHub(cfg)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				for i := range n {
					if err := hub.JoinSince(ctx, "s", ports.Member{ConnectionID: fmt.Sprint(i), UserType: "u"}, discard{}, nil); err != nil {
						b.Fatal(err)
					}
				}
				from := ports.Member{UserType: "admin", ClientType: "web"}
				msg, data := []byte(`"hello"`), []byte(`{"t":1764201234567890123,"p":3,"s":42}`)
				b.ReportAllocs()
				for b.Loop() {
					if err := hub.Broadcast(ctx, "s", from, msg, data); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
