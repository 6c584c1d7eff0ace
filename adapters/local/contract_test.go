package local_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/local"
	"github.com/wsserver/wsserver/ports"
	"github.com/wsserver/wsserver/ports/porttest"
)

// TestChatModelContract runs the model port's contract on the local
// model, as adapters/bedrock and adapters/openai run it on theirs. The
// local model cannot be cut, throttled or stopped short: those cases are
// skipped.
func TestChatModelContract(t *testing.T) {
	porttest.ChatModel(t, porttest.Models{
		Answering: func(t *testing.T, pace time.Duration) ports.ChatModel {
			t.Helper()
			m, err := local.NewModel(local.ModelConfig{TokenDelay: pace})
			require.NoError(t, err)
			return m
		},
	})
}
