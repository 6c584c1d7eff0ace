package main

import (
	"context"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/internal/fakemodel"
	"github.com/wsserver/wsserver/test/internal/fakemodel/fakemodeltest"
)

func TestParse(t *testing.T) {
	fakemodeltest.CheckParse(t, func(args []string, usage io.Writer) (fakemodel.Flags, error) {
		o, err := parse(args, usage)
		return o.Flags, err
	})
	t.Run("guardrail delay", func(t *testing.T) {
		o, err := parse([]string{"-guardrail-delay", "150ms", "-pace", "5ms"}, io.Discard)
		require.NoError(t, err)
		assert.Equal(t, options{Flags: fakemodel.Flags{Text: fakemodel.DefaultText, Pace: 5 * time.Millisecond}, guard: 150 * time.Millisecond}, o)
	})
	t.Run("negative guardrail delay", func(t *testing.T) {
		_, err := parse([]string{"-guardrail-delay", "-1ms"}, io.Discard)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "-guardrail-delay")
	})
}

func TestRun(t *testing.T) {
	fakemodeltest.CheckRun(t, run, func(t *testing.T, ctx context.Context, url string) { //nolint:thelper // the command's own case, run by CheckRun
		resp := fakemodeltest.Post(t, ctx, url+"/model/some-model/converse", `{"messages":[]}`)
		defer resp.Body.Close()
		var out struct {
			Output struct {
				Message struct {
					Content []struct{ Text string }
				}
			}
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		require.Len(t, out.Output.Message.Content, 1)
		assert.Equal(t, "Hello there, world. Hello", out.Output.Message.Content[0].Text)
	})
}
