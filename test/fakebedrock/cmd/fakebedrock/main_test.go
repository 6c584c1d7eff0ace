package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    options
		wantErr string
	}{
		{name: "defaults", want: options{text: defaultText, pace: 20 * time.Millisecond}},
		{
			name: "all flags",
			args: []string{"-text", "Hi there.", "-words", "5", "-pace", "5ms", "-guardrail-delay", "150ms", "-url-file", "/tmp/u"},
			want: options{text: "Hi there.", words: 5, pace: 5 * time.Millisecond, guard: 150 * time.Millisecond, urlFile: "/tmp/u"},
		},
		{name: "no pace", args: []string{"-pace", "0"}, want: options{text: defaultText}},
		{name: "negative words", args: []string{"-words", "-1"}, wantErr: "-words"},
		{name: "negative pace", args: []string{"-pace", "-1ms"}, wantErr: "-pace"},
		{name: "negative guardrail delay", args: []string{"-guardrail-delay", "-1ms"}, wantErr: "-guardrail-delay"},
		{name: "blank text", args: []string{"-text", "  "}, wantErr: "-text"},
		{name: "stray argument", args: []string{"20ms"}, wantErr: "unexpected"},
		{name: "unknown flag", args: []string{"-addr", ":80"}, wantErr: "-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.args, io.Discard)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestDeltas(t *testing.T) {
	tests := []struct {
		name  string
		text  string
		words int
		want  []string
	}{
		{name: "whole text", text: "One two  three.", want: []string{"One", " two", " three."}},
		{name: "cut", text: "One two three.", words: 2, want: []string{"One", " two"}},
		{name: "repeated", text: "One two.", words: 5, want: []string{"One", " two.", " One", " two.", " One"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, deltas(tt.text, tt.words))
		})
	}
}

// TestDefaultText checks the answer keeps the local model's sentence
// lengths for the long benchmark question, which the comparison of
// docs/BENCHMARKS.md relies on.
func TestDefaultText(t *testing.T) {
	d := deltas(defaultText, 0)
	assert.Equal(t, defaultText, strings.Join(d, ""))
	var lengths []int
	n := 0
	for _, p := range d {
		n++
		if strings.HasSuffix(p, ".") {
			lengths = append(lengths, n)
			n = 0
		}
	}
	assert.Equal(t, []int{31, 7, 12, 10}, lengths)
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	urlFile := filepath.Join(t.TempDir(), "url")
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-text", "Hello there, world.", "-words", "4", "-pace", "0", "-url-file", urlFile}, &stdout, &stderr)
	}()

	var url string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(urlFile)
		url = strings.TrimSpace(string(b))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"), url)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/model/some-model/converse", strings.NewReader(`{"messages":[]}`))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
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

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("run did not end on cancel")
	}
	assert.Equal(t, url+"\n", stdout.String())
	assert.Contains(t, stderr.String(), "calls=1")
}
