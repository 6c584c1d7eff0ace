package faults

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/containers"
)

// outage is how long Redis is away in the tests that take it away.
const outage = 5 * time.Second

// sessionClients is one session's sockets on two instances: a sender and a
// listener on each, every one collected.
type sessionClients struct {
	session    string
	senders    map[string]*sender    // "a1", "b1"
	cols       map[string]*collector // "a1", "a2", "b1", "b2"
	instanceOf map[string]string     // client → "a" or "b"
}

func joinSession(t *testing.T, a, b *instance, interval time.Duration) *sessionClients {
	t.Helper()
	s := &sessionClients{
		session:    uniqueID(t),
		senders:    map[string]*sender{},
		cols:       map[string]*collector{},
		instanceOf: map[string]string{"a1": "a", "a2": "a", "b1": "b", "b2": "b"},
	}
	conns := map[string]*client{
		"a1": join(t, a, s.session, "sender"), "a2": join(t, a, s.session, "listener"),
		"b1": join(t, b, s.session, "sender"), "b2": join(t, b, s.session, "listener"),
	}
	for name, c := range conns {
		s.cols[name] = collect(name, c)
	}
	for _, name := range []string{"a1", "b1"} {
		s.senders[name] = startSender(name, conns[name], interval)
		t.Cleanup(s.senders[name].halt)
	}
	return s
}

// remote returns the listener of the other instance than sender's.
func remote(sender string) string {
	if sender == "a1" {
		return "b2"
	}
	return "a2"
}

// local returns the listener of sender's instance.
func local(sender string) string {
	if sender == "a1" {
		return "a2"
	}
	return "b2"
}

// finish stops both senders, sends their end markers, and waits until
// every client has both.
func (s *sessionClients) finish(t *testing.T) map[string]int {
	t.Helper()
	sent := map[string]int{}
	for name, snd := range s.senders {
		sent[name] = snd.finish(t)
	}
	for name, col := range s.cols {
		col.waitFor(t, name+" has both end markers", func(msgs []map[string]any) bool {
			r := receivedBy(msgs)
			return r.has("a1", -1) && r.has("b1", -1)
		})
	}
	return sent
}

// TestRedisLatency: with every reply of Redis 200 ms late,
// session broadcasts and chat work as without: nothing lost, nothing
// twice, one sender's broadcasts in order.
func TestRedisLatency(t *testing.T) {
	setup(t)
	proxy, url := redisVia(t)
	proxy.AddToxic(containers.Toxic{Name: "latency", Type: "latency", Stream: "downstream", Attributes: map[string]any{"latency": 200}})
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	a := start(t, instanceConfig(t, "a", url, dsn))
	b := start(t, instanceConfig(t, "b", url, dsn))

	t.Run("session", func(t *testing.T) {
		s := joinSession(t, a, b, 20*time.Millisecond)
		s.senders["a1"].waitSent(t, 30)
		s.senders["b1"].waitSent(t, 30)
		sent := s.finish(t)
		for name, col := range s.cols {
			r := receivedBy(col.all())
			assert.Empty(t, r.errors, "%s got errors", name)
			assert.Empty(t, r.other, "%s got something else", name)
			for from, n := range sent {
				got := r.from[from]
				assert.Len(t, got, n+1, "%s: every broadcast of %s once (and its end)", name, from)
				assert.Empty(t, duplicates(got), "%s: broadcasts of %s twice", name, from)
				assert.True(t, increasing(got), "%s: broadcasts of %s out of order: %v", name, from, got)
			}
		}
	})

	t.Run("chat", func(t *testing.T) {
		thread := uniqueID(t)
		listener := collect("listener", join(t, b, thread, "agent"))
		c := dial(t, a, "/ws/chat/")
		first := chat(t, c, thread, "Tell me about the weather")
		require.Nil(t, first.err, "%v", first.err)
		require.NotNil(t, first.end)
		second := chat(t, dial(t, b, "/ws/chat/"), thread, "And tomorrow?")
		require.Nil(t, second.err, "%v", second.err)

		assert.Equal(t, []string{
			"user: Tell me about the weather", "assistant: " + first.text,
			"user: And tomorrow?", "assistant: " + second.text,
		}, history(t, a, thread))
		listener.waitFor(t, "both answers mirrored", func(msgs []map[string]any) bool {
			return len(chatEvents(msgs)) >= 4
		})
		assert.Equal(t, []string{
			"user_message: Tell me about the weather", "answer: " + first.text,
			"user_message: And tomorrow?", "answer: " + second.text,
		}, chatEvents(listener.all()))
	})
}

// chatEvents returns the chat events among a session socket's messages, as
// "kind: content".
func chatEvents(msgs []map[string]any) []string {
	var out []string
	for _, m := range msgs {
		if m["type"] != "chat_event" {
			continue
		}
		ev, _ := m["event"].(map[string]any)
		out = append(out, fmt.Sprintf("%v: %v", ev["kind"], ev["content"]))
	}
	return out
}

// TestRedisDownMidFanout takes Redis away for 5 s while two senders on two
// instances broadcast to a session with a listener on each. Every sender
// sees each of its own broadcasts once, and learns with an `unavailable`
// error that the others were not reached; the listener beside it sees
// exactly what it sees; no one sees anything twice; and once Redis is back
// the broadcasts cross instances again by themselves.
//
// It failed before f23d060: once Redis was back, PUBLISH succeeded at once
// while the broker's pub/sub connection waited out its backoff (up to 2 s)
// before it resubscribed; the broadcasts of that window reached no socket
// of the sender's instance, the sender's own included, and no error was
// sent. The broker now delivers those itself.
func TestRedisDownMidFanout(t *testing.T) {
	setup(t)
	proxy, url := redisVia(t)
	a := start(t, instanceConfig(t, "a", url, ""))
	b := start(t, instanceConfig(t, "b", url, ""))
	s := joinSession(t, a, b, 40*time.Millisecond)

	// Flowing across instances before the outage: the numbers up to
	// before[x] reached the other instance.
	before := map[string]int{}
	for _, x := range []string{"a1", "b1"} {
		s.senders[x].waitSent(t, 5)
		n := int(s.senders[x].sent.Load()) - 1
		s.cols[remote(x)].waitFor(t, fmt.Sprintf("%s-%d crossed", x, n), func(msgs []map[string]any) bool {
			return receivedBy(msgs).has(x, n)
		})
		before[x] = n
	}

	proxy.Disable()
	time.Sleep(outage) // broadcasts keep flowing into the outage
	proxy.Enable()
	restored := map[string]int{}
	for x, snd := range s.senders {
		restored[x] = int(snd.sent.Load())
	}

	// No manual step: the subscriptions come back by themselves, and from
	// some broadcast on everything crosses again.
	recovered := map[string]int{}
	for _, x := range []string{"a1", "b1"} {
		s.cols[remote(x)].waitFor(t, x+"'s broadcasts cross instances again", func(msgs []map[string]any) bool {
			for _, n := range receivedBy(msgs).from[x] {
				if n >= restored[x] {
					return true
				}
			}
			return false
		})
		recovered[x] = int(s.senders[x].sent.Load())
	}
	for x, snd := range s.senders {
		snd.waitSent(t, recovered[x]+10)
	}
	sent := s.finish(t)

	got := map[string]received{}
	for name, col := range s.cols {
		got[name] = receivedBy(col.all())
		assert.Empty(t, got[name].other, "%s got something else", name)
		for from, ns := range got[name].from {
			assert.Empty(t, duplicates(ns), "%s saw broadcasts of %s twice", name, from)
		}
	}
	for _, x := range []string{"a1", "b1"} {
		// The sender: never silence. Each of its broadcasts came back to
		// it once, Redis or not, and the outage was reported.
		own := set(got[x].from[x])
		for n := 0; n < sent[x]; n++ {
			assert.True(t, own[n], "%s never saw its broadcast %d", x, n)
		}
		assert.Contains(t, got[x].errors, "unavailable", "%s was not told that the others were not reached", x)
		for _, code := range got[x].errors {
			assert.Equal(t, "unavailable", code, "%s got an error other than unavailable", x)
		}
		// The listener beside it saw exactly what it saw.
		assert.Equal(t, own, set(got[local(x)].from[x]), "%s and %s saw different broadcasts of %s", x, local(x), x)
		assert.Empty(t, got[local(x)].errors, "%s is a listener: nothing to report to it", local(x))

		// The listener across: in order; everything from before the
		// outage and from after the recovery; what was lost in between
		// was reported to the sender or sent while the subscriptions
		// were being restored.
		across := got[remote(x)].from[x]
		assert.True(t, increasing(across), "%s: %s's broadcasts out of order: %v", remote(x), x, across)
		has := set(across)
		var lost []int
		for n := 0; n < sent[x]; n++ {
			switch {
			case has[n]:
			case n <= before[x] || n >= recovered[x]:
				t.Errorf("%s never got %s-%d (before the outage or after the recovery)", remote(x), x, n)
			default:
				lost = append(lost, n)
			}
		}
		t.Logf("%s: sent %d; %d lost across instances during the outage (%d..%d); %d unavailable errors to the sender",
			x, sent[x], len(lost), before[x]+1, recovered[x]-1, len(got[x].errors))
	}
}

// TestRedisDownMidAnswer takes Redis away for 5 s while an answer streams
// on instance a, mirrored to listeners on a and b. The chat client gets its
// whole answer and end (the thread lock's renewals fail for a while, and
// the lease outlives them), the turn is stored whole, a chat that starts
// during the outage is refused with an error, and once Redis is
// back the mirror reaches b again by itself: its listeners get the answer.
func TestRedisDownMidAnswer(t *testing.T) {
	setup(t)
	proxy, url := redisVia(t)
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	cfgA := instanceConfig(t, "a", url, dsn)
	// About 35 tokens: the answer streams for ~15 s, enough for the
	// outage and the recovery to fall within it.
	cfgA.Conversation.LocalTokenDelay = 450 * time.Millisecond
	a := start(t, cfgA)
	b := start(t, instanceConfig(t, "b", url, dsn))

	thread := uniqueID(t)
	listeners := map[string]*collector{
		"a": collect("listener-a", join(t, a, thread, "agent")),
		"b": collect("listener-b", join(t, b, thread, "agent")),
	}
	probe := join(t, a, thread, "probe")
	c := collect("chat", dial(t, a, "/ws/chat/"))
	const question = "Please count slowly"
	sendChat(t, c.c, thread, question)
	c.waitFor(t, "the first token", func(msgs []map[string]any) bool { return hasType(msgs, "token") })
	listeners["b"].waitFor(t, "the user's message mirrored", func(msgs []map[string]any) bool {
		return len(chatEvents(msgs)) >= 1
	})

	proxy.Disable()
	cut := time.Now()
	// A chat that starts now cannot take its thread's lock: it is told.
	refused := chat(t, dial(t, b, "/ws/chat/"), uniqueID(t)+"-during", "Hello?")
	require.NotNil(t, refused.err, "a chat started without Redis ended without an error")
	assert.Empty(t, refused.text)
	time.Sleep(outage - time.Since(cut))
	proxy.Enable()
	// Every probe is sent after Redis came back.
	eventually(t, "broadcasts cross instances again", func() bool {
		probe.send(`{"type":"broadcast","msg":"probe"}`)
		time.Sleep(200 * time.Millisecond)
		return count(listeners["b"].all(), "probe") > 0
	})
	require.False(t, hasType(c.all(), "end") || hasType(c.all(), "error"),
		"the answer ended before Redis came back: the test needs a longer one (LocalTokenDelay)")

	c.waitFor(t, "end or error", func(msgs []map[string]any) bool { return hasType(msgs, "end") || hasType(msgs, "error") })
	got := answerOf(c.all())
	require.Nil(t, got.err, "the chat client got an error: %v", got.err)
	require.NotNil(t, got.end)
	assert.Equal(t, []string{"user: " + question, "assistant: " + got.text}, history(t, b, thread), "the turn is stored whole")
	for name, l := range listeners {
		l.waitFor(t, "the answer mirrored", func(msgs []map[string]any) bool { return len(chatEvents(msgs)) >= 2 })
		assert.Equal(t, []string{"user_message: " + question, "answer: " + got.text}, chatEvents(l.all()), "listener on %s", name)
	}

	// And the next answer starts at once: the lock was released.
	again := chat(t, dial(t, b, "/ws/chat/"), thread, "Thanks")
	assert.Nil(t, again.err, "%v", again.err)
}

func hasType(msgs []map[string]any, typ string) bool {
	for _, m := range msgs {
		if m["type"] == typ {
			return true
		}
	}
	return false
}

// answerOf sums up the chat events among msgs, up to the first end or
// error.
func answerOf(msgs []map[string]any) answer {
	var a answer
	for _, ev := range msgs {
		if a.add(ev) {
			break
		}
	}
	return a
}

// TestRedisResetMidPublish cuts instance a's connection to Redis in the
// middle of a PUBLISH: once after Redis ran it (its reply is lost), once
// before (reset_peer: the command never arrives). Either way the sender
// and the listener beside it see the broadcast exactly once; the listener
// on instance b sees it once when Redis ran it and not at all when it did
// not, and then the sender is told `unavailable`; and the next broadcast
// crosses instances again by itself.
func TestRedisResetMidPublish(t *testing.T) {
	setup(t)
	proxy, url := redisVia(t)
	a := start(t, instanceConfig(t, "a", url, ""))
	b := start(t, instanceConfig(t, "b", servers.Redis.URL(), "")) // b is not behind the proxy
	session := uniqueID(t)
	sender := join(t, a, session, "sender")
	cols := map[string]*collector{
		"sender":        collect("sender", sender),
		"listener on a": collect("listener on a", join(t, a, session, "listener")),
		"listener on b": collect("listener on b", join(t, b, session, "listener")),
	}

	tests := []struct {
		name       string
		toxic      containers.Toxic
		ranInRedis bool
	}{
		{
			name: "reply lost",
			// PUBLISH's reply is an integer (the receivers); the pub/sub
			// connection's pushes are not.
			toxic:      containers.Toxic{Name: "cut", Type: containers.ResetOnMatch, Stream: "downstream", Attributes: map[string]any{"match": ":2\r\n"}},
			ranInRedis: true,
		},
		{
			name:       "command lost",
			toxic:      containers.Toxic{Name: "cut", Type: "reset_peer", Stream: "upstream", Attributes: map[string]any{"timeout": 0}},
			ranInRedis: false,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := fmt.Sprintf("cut-%d", i)
			marker := fmt.Sprintf("after-%d", i)
			errs := countErrors(cols["sender"].all(), "unavailable")
			proxy.AddToxic(tt.toxic)
			sender.send(fmt.Sprintf(`{"type":"broadcast","msg":%q}`, msg))
			cols["sender"].waitFor(t, "the broadcast", func(msgs []map[string]any) bool { return count(msgs, msg) >= 1 })
			if !tt.ranInRedis {
				cols["sender"].waitFor(t, "unavailable", func(msgs []map[string]any) bool {
					return countErrors(msgs, "unavailable") > errs
				})
			}
			proxy.RemoveToxic("cut")

			// Recovered: the next broadcast reaches every socket. Pub/sub
			// keeps order, so a second copy of msg would have come first.
			eventually(t, "a broadcast crosses instances again", func() bool {
				sender.send(fmt.Sprintf(`{"type":"broadcast","msg":%q}`, marker))
				time.Sleep(100 * time.Millisecond)
				return count(cols["listener on b"].all(), marker) > 0
			})
			for name, col := range cols {
				col.waitFor(t, "the marker", func(msgs []map[string]any) bool { return count(msgs, marker) > 0 })
				want := 1
				if name == "listener on b" && !tt.ranInRedis {
					want = 0
				}
				assert.Equal(t, want, count(col.all(), msg), "%s: copies of the broadcast", name)
			}
			if tt.ranInRedis {
				// Either answer is right: unavailable when the error came
				// first, none when the echo did (Redis had run it).
				t.Logf("the sender was told unavailable: %v", countErrors(cols["sender"].all(), "unavailable") > errs)
			}
		})
	}
	for name, col := range cols {
		r := receivedBy(col.all())
		assert.Empty(t, r.other, "%s got something else", name)
		for _, code := range r.errors {
			assert.Equal(t, "unavailable", code, "%s got another error", name)
		}
	}
}

// count returns how many session messages of msgs carry msg.
func count(msgs []map[string]any, msg string) int {
	n := 0
	for _, m := range msgs {
		if m["type"] == "session_message" && m["msg"] == msg {
			n++
		}
	}
	return n
}

func countErrors(msgs []map[string]any, code string) int {
	n := 0
	for _, m := range msgs {
		if m["type"] == "error" && m["code"] == code {
			n++
		}
	}
	return n
}

// TestRedisDownWhenAnswerEnds takes Redis away while an answer streams and
// keeps it away past the answer's end. The chat client gets its whole
// answer and end, the turn is stored whole, the listener on the same
// instance gets the answer from the local fallback, and once Redis is back
// the thread takes the next message at once, on any instance: the lock
// whose release failed during the outage does not hold the thread.
//
// The release that failed is retried in the background (backoff 10 ms to
// 500 ms, core/conversation TestGraphRetriesAFailedRelease). Until that
// retry reaches Redis, a message on another instance may still find the
// thread busy: nothing orders the two instances' first calls after Redis
// returns. So busy is allowed only for a bound far above the backoff and
// far below the lock's TTL (30 s): a release tried once, as before the
// retries, keeps the thread busy past it. Listeners on the other instance
// miss the mirrored answer (at most once, as documented; logged, not
// asserted).
func TestRedisDownWhenAnswerEnds(t *testing.T) {
	setup(t)
	proxy, url := redisVia(t)
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	a := start(t, instanceConfig(t, "a", url, dsn))
	b := start(t, instanceConfig(t, "b", url, dsn))

	thread := uniqueID(t)
	onA := collect("listener on a", join(t, a, thread, "agent"))
	onB := collect("listener on b", join(t, b, thread, "agent"))
	c := dial(t, a, "/ws/chat/")
	got := untilFirstToken(t, c, thread)
	onB.waitFor(t, "the user's message mirrored", func(msgs []map[string]any) bool { return len(chatEvents(msgs)) >= 1 })
	proxy.Disable()
	enabled := false
	defer func() {
		if !enabled {
			proxy.Enable()
		}
	}()
	got = rest(t, c, got)
	require.Nil(t, got.err, "the chat client got an error: %v", got.err)
	require.NotNil(t, got.end)
	onA.waitFor(t, "the answer, delivered locally", func(msgs []map[string]any) bool { return len(chatEvents(msgs)) >= 2 })
	assert.Equal(t, []string{"user_message: " + question, "answer: " + got.text}, chatEvents(onA.all()))
	proxy.Enable()
	enabled = true
	back := time.Now()

	assert.Equal(t, []string{"user: " + question, "assistant: " + got.text}, history(t, b, thread), "the turn is stored whole")
	t.Logf("the listener on b got the answer: %v", len(chatEvents(onB.all())) >= 2)

	// The client saw end: its next message must find the thread free. While
	// the instances reconnect to Redis it may be refused as unavailable
	// (try again), and as busy only until the release's retry gets through.
	const busyBound = 10 * time.Second
	var next answer
	refused := map[string]int{}
	eventually(t, "the next message is answered", func() bool {
		next = chat(t, dial(t, b, "/ws/chat/"), thread, "Thanks")
		if next.err == nil {
			return true
		}
		code, _ := next.err["code"].(string)
		if code == "thread_busy" {
			require.Less(t, time.Since(back), busyBound,
				"the thread is still busy %v after Redis came back: the failed lock release was not retried", busyBound)
		} else {
			require.Equal(t, "unavailable", code, "the next message after end: %v", next.err)
		}
		refused[code]++
		return false
	})
	t.Logf("refused after Redis came back: %v", refused)
	assert.Equal(t, []string{
		"user: " + question, "assistant: " + got.text,
		"user: Thanks", "assistant: " + next.text,
	}, history(t, a, thread))
}
