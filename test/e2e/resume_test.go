package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// resumePairs are the servers a resume is tried on: the answer streams on
// the first, the client resumes on the second.
var resumePairs = []struct {
	name    string
	servers func(t *testing.T, ttl time.Duration) (streams, resumes *instance)
}{
	{"one instance in memory", func(t *testing.T, ttl time.Duration) (*instance, *instance) {
		t.Helper()
		c := defaults(t)
		c.Auth.APIKey = apiKey
		c.Conversation.LocalTokenDelay = 20 * time.Millisecond
		c.Conversation.ResumeTTL = ttl
		in := start(t, c)
		return in, in
	}},
	{"two instances on redis and postgres", func(t *testing.T, ttl time.Duration) (*instance, *instance) {
		t.Helper()
		dsn := servers.Postgres.NewDatabase(t.Context(), t)
		mk := func(id string) *instance {
			c := defaults(t)
			c.InstanceID = id
			c.Store.RedisURL = servers.Redis.URL()
			c.Store.DatabaseURL = dsn
			c.Auth.APIKey = apiKey
			c.Conversation.LocalTokenDelay = 20 * time.Millisecond
			c.Conversation.ResumeTTL = ttl
			return start(t, c)
		}
		return mk("a"), mk("b")
	}},
}

// storedAnswer reads the thread's history and returns its last message.
func storedAnswer(t *testing.T, in *instance, thread string) map[string]any {
	t.Helper()
	status, body := api(t, in, "/api/thread/history", apiKey, csrfToken(t, in), fmt.Sprintf(`{"thread_id":%q}`, thread))
	require.Equal(t, 200, status, "%v", body)
	msgs := body["messages"].([]any)
	require.NotEmpty(t, msgs)
	return msgs[len(msgs)-1].(map[string]any)
}

func seqOf(ev map[string]any) int64 { return int64(ev["seq"].(float64)) }

// TestResumeOnAnotherInstance: a client whose socket drops after k tokens
// resumes on another connection (another instance when there are two)
// and gets exactly the rest, then end: the answer that history stores.
func TestResumeOnAnotherInstance(t *testing.T) {
	for _, pair := range resumePairs {
		for _, k := range []int{0, 6, -1} { // -1: after the last token and its end
			t.Run(fmt.Sprintf("%s/k=%d", pair.name, k), func(t *testing.T) {
				streams, resumes := pair.servers(t, time.Minute)
				owner := dialChat(t, streams)
				thread := fmt.Sprintf("resume-%d-%d", k+1, time.Now().UnixNano())
				owner.send(`{"type":"chat","message":"Tell me about your opening hours and what you can do","data":[],"thread_id":"` + thread + `","resumable":true}`)
				started := owner.nextOf("session_started")
				msgID, epoch := started["message_id"].(string), started["epoch"].(string)
				require.NotEmpty(t, msgID)
				require.NotEmpty(t, epoch)
				var text string
				var seen int64
				for k < 0 || seen < int64(k) {
					ev := owner.next()
					if ev["type"] == "end" {
						assert.Equal(t, seen, seqOf(ev), "end carries the last seq")
						break
					}
					require.Equal(t, "token", ev["type"], "%v", ev)
					seen++
					require.Equal(t, seen, seqOf(ev), "seq counts the tokens")
					text += ev["content"].(string)
				}
				_ = owner.Conn.Close() // the socket drops: a resumable answer runs on

				other := dialChat(t, resumes)
				other.send(fmt.Sprintf(`{"type":"resume","thread_id":%q,"message_id":%q,"seq":%d,"epoch":%q}`, thread, msgID, seen, epoch))
				resumed := other.nextOf("resumed")
				assert.Equal(t, true, resumed["recovered"], "%v", resumed)
				assert.Equal(t, msgID, resumed["message_id"])
				if k < 0 {
					assert.Equal(t, "done", resumed["state"])
				}
				for {
					ev := other.next()
					if ev["type"] == "end" {
						assert.Equal(t, false, ev["cancelled"])
						assert.Equal(t, msgID, ev["message_id"])
						assert.Equal(t, seen, seqOf(ev))
						break
					}
					require.Equal(t, "token", ev["type"], "%v", ev)
					seen++
					require.Equal(t, seen, seqOf(ev), "no gap, no repeat")
					text += ev["content"].(string)
				}
				stored := storedAnswer(t, resumes, thread)
				assert.Equal(t, msgID, stored["id"])
				assert.Equal(t, text, stored["content"], "the resumed answer is the stored one")
				assert.NotEmpty(t, text)
			})
		}
	}
}

// TestResumeAfterExpiryGivesTheSnapshot: once the answer's log expired,
// a resume gets recovered false and the stored answer as its snapshot.
func TestResumeAfterExpiryGivesTheSnapshot(t *testing.T) {
	for _, pair := range resumePairs {
		t.Run(pair.name, func(t *testing.T) {
			streams, resumes := pair.servers(t, time.Second)
			owner := dialChat(t, streams)
			thread := fmt.Sprintf("expired-%d", time.Now().UnixNano())
			owner.send(`{"type":"chat","message":"Hello there","data":[],"thread_id":"` + thread + `","resumable":true}`)
			started := owner.nextOf("session_started")
			end := owner.nextOf("end")
			other := dialChat(t, resumes)
			deadline := time.Now().Add(wait)
			for {
				other.send(fmt.Sprintf(`{"type":"resume","thread_id":%q,"message_id":%q,"seq":1,"epoch":%q}`, thread, started["message_id"], started["epoch"]))
				resumed := other.nextOf("resumed")
				if resumed["recovered"] == false {
					assert.Equal(t, "done", resumed["state"])
					snap := other.nextOf("snapshot")
					assert.Equal(t, started["message_id"], snap["message_id"])
					assert.Equal(t, storedAnswer(t, resumes, thread)["content"], snap["content"])
					return
				}
				// Still logged: the rest and the end come first.
				assert.Equal(t, end["seq"], other.nextOf("end")["seq"])
				require.True(t, time.Now().Before(deadline), "the log never expired")
				// Ask again a little later (the log expires after its 1 s
				// TTL), slowly enough to stay within the rate limit: a
				// resume or ping over it is refused, not answered.
				time.Sleep(250 * time.Millisecond)
			}
		})
	}
}

// TestResumedAnswerMayBeCancelled: the connection that resumed an answer
// owns it: its cancel stops it wherever it runs.
func TestResumedAnswerMayBeCancelled(t *testing.T) {
	for _, pair := range resumePairs {
		t.Run(pair.name, func(t *testing.T) {
			streams, resumes := pair.servers(t, time.Minute)
			owner := dialChat(t, streams)
			thread := fmt.Sprintf("resume-cancel-%d", time.Now().UnixNano())
			owner.send(`{"type":"chat","message":"Tell me everything you know about opening hours","data":[],"thread_id":"` + thread + `","resumable":true}`)
			started := owner.nextOf("session_started")
			owner.nextOf("token")
			_ = owner.Conn.Close()

			other := dialChat(t, resumes)
			other.send(fmt.Sprintf(`{"type":"resume","thread_id":%q,"seq":1,"epoch":%q}`, thread, started["epoch"]))
			resumed := other.nextOf("resumed")
			require.Equal(t, "streaming", resumed["state"], "%v", resumed)
			other.nextOf("token")
			other.send(`{"type":"cancel"}`)
			var text []string
			for {
				ev := other.next()
				if ev["type"] == "end" {
					assert.Equal(t, true, ev["cancelled"])
					break
				}
				text = append(text, ev["content"].(string))
			}
			stored := storedAnswer(t, resumes, thread)
			assert.Equal(t, true, stored["cancelled"])
			assert.True(t, strings.HasSuffix(stored["content"].(string), strings.Join(text, "")))
		})
	}
}
