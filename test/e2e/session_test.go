package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// twoInstances starts two instances sharing Redis, each with its own key
// prefix-free view (sessions are named uniquely per test instead).
func twoInstances(t *testing.T, bURL string, ttl time.Duration) (*instance, *instance) {
	t.Helper()
	a, b := defaults(t), defaults(t)
	a.InstanceID, b.InstanceID = "a", "b"
	useRedis(&a, redisURL())
	useRedis(&b, bURL)
	if ttl > 0 {
		a.Store.PresenceTTL, b.Store.PresenceTTL = ttl, ttl
	}
	return start(t, a), start(t, b)
}

func uniqueSession(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("s-%d", time.Now().UnixNano())
}

func presenceCount(t *testing.T, c *client) int {
	t.Helper()
	c.send(`{"type":"presence"}`)
	p := c.nextOf("presence")
	return int(p["count"].(float64))
}

func TestSessionOnOneInstanceWithoutRedis(t *testing.T) {
	in := start(t, defaults(t))
	s := uniqueSession(t)
	admin := join(t, in, s, "admin")
	agent := join(t, in, s, "agent")

	admin.send(`{"type":"broadcast","msg":"hello"}`)
	want := map[string]any{"type": "session_message", "user_type": "admin", "client_type": "web", "msg": "hello", "data": nil}
	assert.Equal(t, want, admin.next())
	assert.Equal(t, want, agent.next())
	assert.Equal(t, 2, presenceCount(t, agent))
}

func TestSessionAcrossInstances(t *testing.T) {
	a, b := twoInstances(t, redisURL(), 0)
	s, other := uniqueSession(t), uniqueSession(t)+"-other"
	onA := join(t, a, s, "admin")
	onB := join(t, b, s, "agent")
	elsewhere := join(t, b, other, "agent")

	// a broadcast reaches every connection on every instance, the sender included.
	{
		onA.send(`{"type":"broadcast","msg":"from a","data":{"k":[1,2]}}`)
		want := map[string]any{"type": "session_message", "user_type": "admin", "client_type": "web", "msg": "from a", "data": map[string]any{"k": []any{1.0, 2.0}}}
		assert.Equal(t, want, onA.next())
		assert.Equal(t, want, onB.next())
	}

	// presence counts every instance.
	{
		onB.send(`{"type":"presence"}`)
		p := onB.nextOf("presence")
		assert.InDelta(t, 2, p["count"], 0) // a JSON number: exactly 2
		var types []any
		for _, c := range p["connections"].([]any) {
			types = append(types, c.(map[string]any)["user_type"])
		}
		assert.ElementsMatch(t, []any{"admin", "agent"}, types)
	}

	// One sender's messages arrive in order (150: within the default
	// burst of the rate limit).
	{
		for i := range 150 {
			onA.send(fmt.Sprintf(`{"type":"broadcast","msg":%d}`, i))
		}
		for i := range 150 {
			assert.InDelta(t, i, onB.nextOf("session_message")["msg"], 0)
		}
		for i := range 150 {
			assert.InDelta(t, i, onA.nextOf("session_message")["msg"], 0)
		}
	}

	// nothing leaks into another session.
	{
		elsewhere.send(`{"type":"ping"}`)
		assert.Equal(t, "pong", elsewhere.next()["type"])
		assert.Empty(t, elsewhere.Msgs)
	}

	// a clean disconnect leaves presence at once.
	{
		gone := join(t, b, s, "leaving")
		assert.Equal(t, 3, presenceCount(t, onA))
		require.NoError(t, gone.Conn.Close())
		<-gone.Done
		eventually(t, "presence drops to 2", func() bool { return presenceCount(t, onA) == 2 })
	}
}

func TestDeadInstancePresenceExpires(t *testing.T) {
	singleRedisOnly(t)
	ttl := 1500 * time.Millisecond
	cut := newCuttable(t, servers.Redis.URL())
	a, b := twoInstances(t, cut.url, ttl)
	s := uniqueSession(t)
	onA := join(t, a, s, "admin")
	join(t, b, s, "agent")
	require.Equal(t, 2, presenceCount(t, onA))

	// b loses Redis for good and says no goodbye: to the others it died.
	cut.cut()
	start := time.Now()
	eventually(t, "b's connection leaves presence", func() bool { return presenceCount(t, onA) == 1 })
	t.Logf("b's entry expired after %v (PRESENCE_TTL %v)", time.Since(start), ttl)
}

func TestRedisStopsAndComesBack(t *testing.T) {
	singleRedisOnly(t)
	a, b := twoInstances(t, servers.Redis.URL(), 1500*time.Millisecond)
	s := uniqueSession(t)
	onA := join(t, a, s, "admin")
	alsoOnA := join(t, a, s, "viewer")
	onB := join(t, b, s, "agent")
	require.Equal(t, 3, presenceCount(t, onA))

	require.NoError(t, servers.Redis.Stop(context.Background()))
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = servers.Redis.Start(context.Background())
		}
	})

	// Both instances keep serving: local sockets still get broadcasts,
	// and what could not be done says so.
	assert.Equal(t, 200, get(t, a, "/health/"))
	assert.Equal(t, 503, get(t, a, "/ready/"))
	onA.send(`{"type":"broadcast","msg":"local only"}`)
	assert.Equal(t, "local only", onA.nextOf("session_message")["msg"])
	assert.Equal(t, "local only", alsoOnA.nextOf("session_message")["msg"])
	e := onA.nextOf("error")
	assert.Equal(t, "unavailable", e["code"])
	onB.send(`{"type":"presence"}`)
	assert.Equal(t, "unavailable", onB.nextOf("error")["code"])
	onB.send(`{"type":"ping"}`)
	assert.Equal(t, "pong", onB.nextOf("pong")["type"])
	late := join(t, a, s, "late") // a hello still works without Redis

	require.NoError(t, servers.Redis.Start(context.Background()))
	stopped = false

	// Subscriptions and presence come back by themselves (Redis lost
	// everything: it has no persistence).
	eventually(t, "ready again", func() bool { return get(t, a, "/ready/") == 200 })
	eventually(t, "presence re-announced", func() bool { return presenceCount(t, onB) == 4 })
	n := 0
	eventually(t, "broadcasts cross instances again", func() bool {
		n++
		onA.send(fmt.Sprintf(`{"type":"broadcast","msg":"again %d"}`, n))
		select {
		case m := <-onB.Msgs:
			return m["type"] == "session_message"
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
	late.send(`{"type":"broadcast","msg":"from late"}`)
	for {
		if m := onB.nextOf("session_message"); m["msg"] == "from late" {
			break
		}
	}
}

func TestGracefulShutdown(t *testing.T) {
	a, b := twoInstances(t, redisURL(), 0)
	s := uniqueSession(t)
	onA := join(t, a, s, "admin")
	onB := join(t, b, s, "agent")

	done := make(chan error, 1)
	go func() { done <- a.shutdown(t) }()
	assert.Equal(t, 1012, onA.closed(), "session sockets close with 1012 so clients reconnect elsewhere")
	require.NoError(t, <-done)

	// The other instance keeps serving, and a's connection left presence.
	eventually(t, "a's connection left presence", func() bool { return presenceCount(t, onB) == 1 })
}

// cuttable is a TCP proxy to Redis that can be cut for good, so an
// instance behind it loses Redis as if it had died.
type cuttable struct {
	url    string
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	isCut  bool
	target string
}

func newCuttable(t *testing.T, redisURL string) *cuttable {
	t.Helper()
	var host string
	_, err := fmt.Sscanf(redisURL, "redis://%s", &host)
	require.NoError(t, err)
	if i := len(host) - 2; i > 0 && host[i:] == "/0" {
		host = host[:i]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cuttable{url: "redis://" + ln.Addr().String() + "/0", ln: ln, target: host}
	go p.accept()
	t.Cleanup(p.cut)
	return p
}

func (p *cuttable) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.isCut {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

func (p *cuttable) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	p.ln.Close()
	for _, c := range p.conns {
		c.Close()
	}
}
