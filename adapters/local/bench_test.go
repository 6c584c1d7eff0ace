package local_test

import (
	"context"
	"testing"

	"github.com/wsserver/wsserver/adapters/local"
)

// BenchmarkRules measures the shipped rule files on what a chat of
// test/bench/chat.sh gives them: the escalation rules on the user's
// message, the guardrail rules on one sentence of the local model's.
func BenchmarkRules(b *testing.B) {
	a, err := local.LoadAppdata("")
	if err != nil {
		b.Fatal(err)
	}
	const message = "Please explain in detail how streaming answers work here, what happens to my thread and its history when I come back later from another device or browser tab, who else can see it, and what I should do next."
	const sentence = "Thanks for your message; I have looked at your question and the details you gave me, and here is what I can tell you about it right now. "
	b.Run("escalation", func(b *testing.B) {
		d, err := local.NewEscalation(a.Escalation)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if e, err := d.Detect(context.Background(), message, nil); err != nil || e.Escalate {
				b.Fatal(e, err)
			}
		}
	})
	b.Run("guardrail", func(b *testing.B) {
		g, err := local.NewGuardrail(local.GuardrailConfig{Rules: a.Guardrail})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if v, err := g.Check(context.Background(), sentence); err != nil || !v.Pass {
				b.Fatal(v, err)
			}
		}
	})
}
