package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/internal/fakemodel/fakemodeltest"
)

func TestParse(t *testing.T) {
	fakemodeltest.CheckParse(t, parse)
}

func TestRun(t *testing.T) {
	fakemodeltest.CheckRun(t, run, func(t *testing.T, ctx context.Context, url string) { //nolint:thelper // the command's own case, run by CheckRun
		require.True(t, strings.HasSuffix(url, "/v1"), url)
		resp := fakemodeltest.Post(t, ctx, url+"/chat/completions", `{"model":"m","messages":[]}`)
		defer resp.Body.Close()
		var out struct {
			Choices []struct {
				Message struct{ Content string }
			}
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		require.Len(t, out.Choices, 1)
		assert.Equal(t, "Hello there, world. Hello", out.Choices[0].Message.Content)
	})
}
