package session

import (
	"context"
	"fmt"
	"testing"

	"github.com/wsserver/wsserver/ports"
)

type discard struct{}

func (discard) Send([]byte) {}

func BenchmarkDecodeBroadcast(b *testing.B) {
	frame := []byte(`{"type":"broadcast","msg":"hello","data":{"t":1764201234567890123,"p":3,"s":42}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeSessionMessage(b *testing.B) {
	from := ports.Member{UserType: "admin", ClientType: "web"}
	msg, data := []byte(`"hello"`), []byte(`{"t":1764201234567890123,"p":3,"s":42}`)
	b.ReportAllocs()
	for b.Loop() {
		EncodeSessionMessage(from, msg, data)
	}
}

// BenchmarkBroadcast is one broadcast through the hub on the in-process
// broker: encode, publish, frame once, hand to every local subscriber.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 10, 1000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			h, err := NewHub(HubConfig{Broker: newFakeBroker(true), Presence: newFakePresence()})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for i := range n {
				if err := h.Join(ctx, "s", ports.Member{ConnectionID: fmt.Sprint(i), UserType: "u"}, discard{}, nil); err != nil {
					b.Fatal(err)
				}
			}
			from := ports.Member{UserType: "admin", ClientType: "web"}
			msg := []byte(`"hello"`)
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Broadcast(ctx, "s", from, msg, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodePresence is the reply to a presence query on a session of
// 100 connections (ids as the server makes them: UUIDs).
func BenchmarkEncodePresence(b *testing.B) {
	members := make([]ports.Member, 100)
	for i := range members {
		members[i] = ports.Member{ConnectionID: fmt.Sprintf("%08x-1f2e-4d3c-8b9a-%012x", i*7919%100, i), UserType: "user", ClientType: "web"}
	}
	b.ReportAllocs()
	for b.Loop() {
		EncodePresence("session-1", members)
	}
}
