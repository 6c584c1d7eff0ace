package bedrock_test

import (
	"testing"
	"time"

	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
	"github.com/wsserver/wsserver/test/fakebedrock"
)

// TestChatModelContract runs the model port's contract on the adapter
// against the fake, as adapters/local and adapters/openai run it.
func TestChatModelContract(t *testing.T) {
	porttest.ChatModel(t, porttest.Models{
		Answering: func(t *testing.T, pace time.Duration) ports.ChatModel {
			t.Helper()
			m, _ := newModel(t, fakebedrock.Script{Deltas: porttest.Pieces, Pace: pace}, nil)
			return m
		},
		Stopping: func(t *testing.T, stop ports.StopReason) ports.ChatModel {
			t.Helper()
			m, _ := newModel(t, fakebedrock.Script{Deltas: porttest.Pieces, Stop: string(stop)}, nil)
			return m
		},
		Cut: func(t *testing.T) ports.ChatModel {
			t.Helper()
			m, _ := newModel(t, fakebedrock.Script{Deltas: porttest.Pieces,
				Exception: &fakebedrock.Exception{After: 2, Type: "modelStreamErrorException", Message: "the model failed"}}, nil)
			return m
		},
		Throttled: func(t *testing.T) ports.ChatModel {
			t.Helper()
			m, fake := newModel(t, fakebedrock.Script{Deltas: porttest.Pieces}, nil)
			fake.Throttle(1)
			return m
		},
	})
}
