package conversation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/core/conversation"
	"github.com/wsserver/wsserver/ports"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/runs.txt from the runs")

// TestRunsGolden pins, byte for byte, what runs down every path of the
// graph send the client (encoded events), tell the session, store as
// checkpoints and return: the run's state may be reshaped, but none of
// that may change with it. Rewrite the file with -update only for a
// change of behaviour meant as one.
func TestRunsGolden(t *testing.T) {
	type step struct {
		msg    string
		data   json.RawMessage
		cancel bool // the client cancels on the first token
	}
	for _, tt := range []struct {
		name        string
		scripts     []script
		whole       bool
		maxRewrites int
		failSave    bool
		guardErr    error
		steps       []step
	}{
		{name: "answer", scripts: []script{{pieces: []string{"Hello", " there.", " How can", " I help?"}, usage: ports.Usage{InputTokens: 5, OutputTokens: 4}}},
			steps: []step{{msg: "hi", data: json.RawMessage(`{"page":"faq"}`)}}},
		{name: "rewrite then a second turn", maxRewrites: 1, scripts: []script{
			{pieces: []string{"Ok.", " BAD."}, usage: ports.Usage{InputTokens: 10, OutputTokens: 2}},
			{pieces: []string{" Fine."}, usage: ports.Usage{InputTokens: 12, OutputTokens: 1}},
			{pieces: []string{"Again."}, usage: ports.Usage{InputTokens: 20, OutputTokens: 1}},
		}, steps: []step{{msg: "hi", data: json.RawMessage(`{"page":"faq"}`)}, {msg: "more"}}},
		{name: "fallback escalates", scripts: []script{{pieces: []string{"Ok.", " BAD."}}},
			steps: []step{{msg: "hi"}}},
		{name: "whole answer", whole: true, scripts: []script{{pieces: []string{"One.", " Two."}}},
			steps: []step{{msg: "hi"}}},
		{name: "detector escalates", steps: []step{{msg: "a human please"}}},
		{name: "cancelled", scripts: []script{{pieces: []string{"One.", " Two.", " Three."}}},
			steps: []step{{msg: "hi", cancel: true}}},
		{name: "model fails", scripts: []script{{pieces: []string{"One.", " Two"}, err: errors.New("model gone")}},
			steps: []step{{msg: "hi"}}},
		{name: "provider stops", scripts: []script{{pieces: []string{"One.", " Two."}, stop: ports.StopContentFiltered}},
			steps: []step{{msg: "hi"}}},
		{name: "guardrail fails", guardErr: errors.New("guardrail gone"), scripts: []script{{pieces: []string{"One."}}},
			steps: []step{{msg: "hi"}}},
		{name: "not saved", failSave: true, scripts: []script{{pieces: []string{"One."}}},
			steps: []step{{msg: "hi"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, err := newHarness(tt.scripts, tt.whole, tt.maxRewrites)
			require.NoError(t, err)
			h.guard.err = tt.guardErr
			if tt.failSave {
				h.store.failAppend = errors.New("disk full")
			}
			var got bytes.Buffer
			for _, st := range tt.steps {
				ctx, cancel := context.WithCancel(context.Background())
				s := sink{}
				if st.cancel {
					s.onTok = func(conversation.Event) { cancel() }
				}
				res, err := h.conv.Run(ctx, conversation.Request{ThreadID: thread, Message: st.msg, Channel: "web", Data: st.data}, s.emit)
				cancel()
				fmt.Fprintf(&got, "run %q: result %+v, err %v\n", st.msg, res, err)
				for _, ev := range s.events {
					fmt.Fprintf(&got, "event %s\n", conversation.AppendEvent(nil, ev, "conn-1"))
				}
			}
			cps, err := h.store.Checkpoints(context.Background(), thread)
			require.NoError(t, err)
			for _, cp := range cps {
				fmt.Fprintf(&got, "checkpoint %s %d %s %s %s\n", cp.RunID, cp.Step, cp.Node, cp.CreatedAt.Format("15:04:05"), cp.State)
			}
			h.pub.mu.Lock()
			for _, ev := range h.pub.events {
				fmt.Fprintf(&got, "published %s\n", conversation.EncodeChatEvent(thread, ev))
			}
			h.pub.mu.Unlock()

			path := filepath.Join("testdata", "golden", strings.ReplaceAll(tt.name, " ", "_")+".txt")
			if *update {
				require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
				require.NoError(t, os.WriteFile(path, got.Bytes(), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.Equal(t, string(want), got.String())
		})
	}
}
