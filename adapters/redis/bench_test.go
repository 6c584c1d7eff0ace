package redis_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/core/session"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/test/containers"
)

// BenchmarkPublishHistory is one broadcast's publication on Redis, with
// this instance subscribed (its echo comes back), as Broker.Publish (one
// PUBLISH) and as History.Publish (one script: HINCRBY, XADD with MAXLEN
// 100, two PEXPIREs, PUBLISH). serial: one publisher, so each op is a
// round trip; parallel: GOMAXPROCS×4 publishers sharing the client's
// pipeline, each on its own session.
func BenchmarkPublishHistory(b *testing.B) {
	msg, data := []byte(`"hello"`), []byte(`{"t":1764201234567890123,"p":3,"s":42}`)
	from := ports.Member{UserType: "admin", ClientType: "web"}
	payload := session.EncodeSessionMessage(from, msg, data)
	numbered := session.NumberSessionMessage(from, msg, data)
	for _, history := range []bool{false, true} {
		name := map[bool]string{false: "history=off", true: "history=on"}[history]
		b.Run(name+"/serial", func(b *testing.B) {
			publish := publisher(b, history)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := publish(ctx, "s", payload, numbered); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			publish := publisher(b, history)
			ctx := context.Background()
			b.SetParallelism(4)
			b.ReportAllocs()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				s := fmt.Sprint("p", n.Add(1))
				for pb.Next() {
					if err := publish(ctx, s, payload, numbered); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

type publishFunc func(ctx context.Context, s string, payload []byte, numbered ports.Numbered) error

func publisher(b *testing.B, history bool) publishFunc {
	b.Helper()
	c, err := redis.Open(b.Context(), server.URL(), 10*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	br, err := redis.NewBroker(redis.BrokerConfig{Client: c, Prefix: containers.Prefix(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(br.Close)
	<-br.Subscribe("s", func(ports.Delivery) {})
	if !history {
		return func(ctx context.Context, s string, payload []byte, _ ports.Numbered) error {
			return br.Publish(ctx, s, payload)
		}
	}
	h, err := redis.NewHistory(redis.HistoryConfig{Broker: br, Size: 100, TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	return func(ctx context.Context, s string, _ []byte, numbered ports.Numbered) error {
		_, err := h.Publish(ctx, s, numbered)
		return err
	}
}
