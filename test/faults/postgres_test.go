package faults

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/containers"
)

// question is asked in every chat of these tests whose answer is compared
// with the answer it gets on a fresh thread (the local model always gives
// the same answer to the same question on a thread of the same length).
const question = "Tell me about the weather"

// postgresInstances starts two instances sharing Redis, with PostgreSQL
// behind proxy; a's model streams a token every tokenDelay.
func postgresInstances(t *testing.T, dsn string, tokenDelay time.Duration) (*instance, *instance) {
	t.Helper()
	cfgA := instanceConfig(t, "a", servers.Redis.URL(), dsn)
	cfgA.Conversation.LocalTokenDelay = tokenDelay
	return start(t, cfgA), start(t, instanceConfig(t, "b", servers.Redis.URL(), dsn))
}

// freshAnswer returns the answer to question on a new thread of in, and
// checks that it was stored.
func freshAnswer(t *testing.T, in *instance) string {
	t.Helper()
	thread := uniqueID(t) + "-reference"
	got := chat(t, dial(t, in, "/ws/chat/"), thread, question)
	require.Nil(t, got.err, "%v", got.err)
	require.Equal(t, []string{"user: " + question, "assistant: " + got.text}, history(t, in, thread))
	return got.text
}

// untilFirstToken sends question on c and returns once its first token
// came, with the events read so far.
func untilFirstToken(t *testing.T, c *client, thread string) answer {
	t.Helper()
	sendChat(t, c, thread, question)
	var a answer
	for a.tokens == 0 {
		ev := c.Next(t)
		switch ev["type"] {
		case "session_started":
			a.started = true
		case "token":
			a.text += ev["content"].(string)
			a.tokens++
		default:
			t.Fatalf("before the first token: %v", ev)
		}
	}
	return a
}

// rest reads the rest of an answer begun in a.
func rest(t *testing.T, c *client, a answer) answer {
	t.Helper()
	more := readAnswer(t, c)
	a.text += more.text
	a.tokens += more.tokens
	a.end, a.err = more.end, more.err
	return a
}

// retryWorks checks that the thread takes a new chat on in at once (its
// lock was released) and that the thread then holds exactly what it held
// before plus that turn.
func retryWorks(t *testing.T, in *instance, thread string, before []string) {
	t.Helper()
	got := chat(t, dial(t, in, "/ws/chat/"), thread, "Are you there?")
	require.Nil(t, got.err, "the retry on instance %s: %v", in.id, got.err)
	require.NotNil(t, got.end)
	want := append(append([]string{}, before...), "user: Are you there?", "assistant: "+got.text)
	assert.Equal(t, want, history(t, in, thread))
}

// TestPostgresHung: PostgreSQL accepts connections and never answers (a
// timeout toxic that holds every byte sent to it). The chat client gets an
// error in bounded time, whether the thread was being read or the turn
// saved; the turn is not stored; and once PostgreSQL answers again the
// thread takes a retry at once on any instance: its lock was released.
func TestPostgresHung(t *testing.T) {
	setup(t)
	proxy, dsn := postgresVia(t)
	a, b := postgresInstances(t, dsn, 50*time.Millisecond)
	whole := freshAnswer(t, a)

	hang := containers.Toxic{Name: "hang", Type: "timeout", Stream: "upstream", Attributes: map[string]any{"timeout": 0}}

	t.Run("loading the thread", func(t *testing.T) {
		thread := uniqueID(t)
		proxy.AddToxic(hang)
		removed := false
		defer func() {
			if !removed {
				proxy.RemoveToxic(hang.Name)
			}
		}()
		c := dial(t, a, "/ws/chat/")
		sendChat(t, c, thread, question)
		got := readAnswer(t, c) // every event within wait, or the test fails
		require.NotNil(t, got.err, "end although the thread could not be read")
		assert.NotEqual(t, "thread_busy", got.err["code"])
		assert.Empty(t, got.text, "no answer without the thread")
		proxy.RemoveToxic(hang.Name)
		removed = true

		retryWorks(t, b, thread, nil)
	})

	t.Run("saving the turn", func(t *testing.T) {
		thread := uniqueID(t)
		c := dial(t, a, "/ws/chat/")
		got := untilFirstToken(t, c, thread)
		proxy.AddToxic(hang)
		removed := false
		defer func() {
			if !removed {
				proxy.RemoveToxic(hang.Name)
			}
		}()
		got = rest(t, c, got)
		assert.Equal(t, whole, got.text, "the whole answer")
		require.NotNil(t, got.err, "end although the turn could not be saved")
		assert.Contains(t, got.err["message"], "saved", "the error says the answer was not saved")
		proxy.RemoveToxic(hang.Name)
		removed = true

		retryWorks(t, b, thread, nil) // nothing of the hung turn was stored
	})

	// PostgreSQL gets every statement, runs it, and its answers never come
	// back: the turn may be committed although the save timed out.
	t.Run("answers lost", func(t *testing.T) {
		thread := uniqueID(t)
		c := dial(t, a, "/ws/chat/")
		got := untilFirstToken(t, c, thread)
		mute := containers.Toxic{Name: "mute", Type: "timeout", Stream: "downstream", Attributes: map[string]any{"timeout": 0}}
		proxy.AddToxic(mute)
		removed := false
		defer func() {
			if !removed {
				proxy.RemoveToxic(mute.Name)
			}
		}()
		got = rest(t, c, got)
		proxy.RemoveToxic(mute.Name)
		removed = true

		assert.Equal(t, whole, got.text, "the whole answer")
		stored := history(t, b, thread)
		if got.end != nil {
			assert.Equal(t, []string{"user: " + question, "assistant: " + whole}, stored, "end: the turn is stored whole")
		} else {
			t.Logf("the client was told: %v", got.err)
			assert.Empty(t, stored, "the client was told the turn was not saved, and it was")
		}
		retryWorks(t, b, thread, stored)
	})
}

// TestPostgresDownMidTurn cuts PostgreSQL while an answer streams. The
// client gets its whole answer, then either end (the turn was saved: the
// history has it whole) or an error saying it was not saved (the history
// has none of it); never half a turn. PostgreSQL back, the next chat works
// and is stored, with no restart.
func TestPostgresDownMidTurn(t *testing.T) {
	setup(t)
	proxy, dsn := postgresVia(t)
	a, b := postgresInstances(t, dsn, 50*time.Millisecond)
	whole := freshAnswer(t, a)

	tests := []struct {
		name string
		down time.Duration // how long PostgreSQL stays away; 0: until the answer ended
	}{
		{name: "down until the answer ended"},
		{name: "back before the answer ended", down: 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			thread := uniqueID(t)
			c := dial(t, a, "/ws/chat/")
			got := untilFirstToken(t, c, thread)
			proxy.Disable()
			enabled := false
			defer func() {
				if !enabled {
					proxy.Enable()
				}
			}()
			if tt.down > 0 {
				time.Sleep(tt.down)
				proxy.Enable()
				enabled = true
			}
			got = rest(t, c, got)
			if !enabled {
				proxy.Enable()
				enabled = true
			}

			assert.Equal(t, whole, got.text, "the whole answer")
			stored := history(t, b, thread)
			if got.end != nil {
				t.Log("the turn was saved")
				assert.Equal(t, []string{"user: " + question, "assistant: " + whole}, stored, "end: the turn is stored whole")
			} else {
				t.Logf("the turn was not saved: %v", got.err)
				assert.Contains(t, got.err["message"], "saved", "the error says the answer was not saved")
				assert.Empty(t, stored, "not saved: nothing of the turn is stored")
			}
			if tt.down == 0 {
				assert.NotNil(t, got.err, "PostgreSQL was away when the turn was saved")
			}
			retryWorks(t, b, thread, stored)
		})
	}
}

// TestPostgresBack: with PostgreSQL away a chat gets an error at once
// (its thread cannot be read) and /ready/ says so; the first chat after
// PostgreSQL is back works and is stored, with no restart and no wait.
func TestPostgresBack(t *testing.T) {
	setup(t)
	proxy, dsn := postgresVia(t)
	a, _ := postgresInstances(t, dsn, 0)
	freshAnswer(t, a) // the pool holds connections, which the cut breaks

	proxy.Disable()
	thread := uniqueID(t)
	c := dial(t, a, "/ws/chat/")
	got := chat(t, c, thread, question)
	require.NotNil(t, got.err, "end although PostgreSQL is away")
	assert.NotEqual(t, "thread_busy", got.err["code"])
	status, err := get(a, "/ready/")
	require.NoError(t, err)
	assert.Equal(t, 503, status, "/ready/ with PostgreSQL away")

	proxy.Enable()
	again := chat(t, c, thread, question)
	require.Nil(t, again.err, "the first chat after PostgreSQL came back: %v", again.err)
	assert.Equal(t, []string{"user: " + question, "assistant: " + again.text}, history(t, a, thread))
	status, err = get(a, "/ready/")
	require.NoError(t, err)
	assert.Equal(t, 200, status, "/ready/ with PostgreSQL back")
}
