package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCancelFromAnotherConnection: a cancel naming a thread stops that
// thread's answer on whichever socket, and instance, streams it; the
// answer's own socket gets end cancelled, and history keeps what it was
// sent, marked cancelled.
func TestCancelFromAnotherConnection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		servers func(t *testing.T) (streams, cancels *instance)
	}{
		{"one instance in memory", func(t *testing.T) (*instance, *instance) {
			t.Helper()
			c := defaults(t)
			c.Auth.APIKey = apiKey
			c.Conversation.LocalTokenDelay = 30 * time.Millisecond
			in := start(t, c)
			return in, in
		}},
		{"two instances on redis and postgres", func(t *testing.T) (*instance, *instance) {
			t.Helper()
			return chatInstances(t, 30*time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			streams, cancels := tc.servers(t)
			owner, other := dialChat(t, streams), dialChat(t, cancels)
			thread := fmt.Sprintf("stop-elsewhere-%d", time.Now().UnixNano())
			owner.send(`{"type":"chat","message":"Tell me everything","data":[],"thread_id":"` + thread + `"}`)
			require.Equal(t, "session_started", owner.next()["type"])
			sent := owner.nextOf("token")["content"].(string)

			other.send(`{"type":"cancel","thread_id":"` + thread + `"}`)
			var end map[string]any
			for end == nil {
				ev := owner.next()
				switch ev["type"] {
				case "token":
					sent += ev["content"].(string)
				case "end":
					end = ev
				default:
					t.Fatalf("unexpected %v", ev)
				}
			}
			assert.Equal(t, true, end["cancelled"])

			token := csrfToken(t, cancels)
			status, body := api(t, cancels, "/api/thread/history", apiKey, token, fmt.Sprintf(`{"thread_id":%q}`, thread))
			require.Equal(t, 200, status, "%v", body)
			msgs := body["messages"].([]any)
			require.Len(t, msgs, 2)
			last := msgs[1].(map[string]any)
			assert.Equal(t, sent, last["content"], "history keeps exactly what was streamed")
			assert.Equal(t, true, last["cancelled"])
			assert.Equal(t, end["message_id"], last["id"])

			// The thread is free: the cancelling socket may chat on it.
			again := chat(t, other, "Now?", thread)
			assert.Empty(t, again.errCode)
			// A cancel of a thread where nothing streams does nothing.
			other.send(`{"type":"cancel","thread_id":"` + thread + `"}`)
			other.send(`{"type":"ping"}`)
			assert.Equal(t, "pong", other.next()["type"])
		})
	}
}
