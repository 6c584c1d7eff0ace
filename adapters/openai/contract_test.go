package openai_test

import (
	"testing"
	"time"

	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
	"github.com/wsserver/wsserver/test/fakeopenai"
)

// TestChatModelContract runs the model port's contract on the adapter
// against the fake, as adapters/local and adapters/bedrock run it.
func TestChatModelContract(t *testing.T) {
	porttest.ChatModel(t, porttest.Models{
		Answering: func(t *testing.T, pace time.Duration) ports.ChatModel {
			t.Helper()
			m, _ := newModel(t, fakeopenai.Script{Deltas: porttest.Pieces, Pace: pace}, nil)
			return m
		},
		Stopping: func(t *testing.T, stop ports.StopReason) ports.ChatModel {
			t.Helper()
			finish := map[ports.StopReason]string{ports.StopMaxTokens: "length", ports.StopGuardrailIntervened: "content_filter"}[stop]
			m, _ := newModel(t, fakeopenai.Script{Deltas: porttest.Pieces, Finish: finish}, nil)
			return m
		},
		Cut: func(t *testing.T) ports.ChatModel {
			t.Helper()
			m, _ := newModel(t, fakeopenai.Script{Deltas: porttest.Pieces, Cut: &fakeopenai.Cut{After: 2}}, nil)
			return m
		},
		Throttled: func(t *testing.T) ports.ChatModel {
			t.Helper()
			m, fake := newModel(t, fakeopenai.Script{Deltas: porttest.Pieces}, nil)
			fake.Throttle(1)
			return m
		},
	})
}
