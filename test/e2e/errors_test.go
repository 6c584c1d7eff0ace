package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/test/containers"
	"github.com/wsserver/wsserver/test/fakebedrock"
	"github.com/wsserver/wsserver/test/schema"
)

// TestEveryDocumentedErrorCodeIsSent provokes, against live instances,
// every error code docs/asyncapi.yaml (and so PROTOCOL.md §6.1, which the
// docs test keeps equal to it) documents for each WebSocket endpoint. The
// frames are validated against the schemas by wstest as they arrive; this
// test adds that each documented code is really sent, and that the table
// below covers exactly the documented codes: a code added to the server's
// documents without a way to see it, or provoked here without being
// documented, fails.
func TestEveryDocumentedErrorCodeIsSent(t *testing.T) {
	proto, err := schema.AsyncAPI()
	require.NoError(t, err)

	plain := start(t, defaults(t))
	limited := start(t, withConfig(t, func(c *config.Config) {
		// One message, then nothing for a very long time.
		c.WebSocket.RateLimitPerSec = 0.001
		c.WebSocket.RateLimitBurst = 1
	}))
	slow := start(t, withConfig(t, func(c *config.Config) { c.Conversation.LocalTokenDelay = 200 * time.Millisecond }))
	for _, in := range []*instance{plain, limited, slow} {
		eventually(t, "the instance serves", func() bool { return get(t, in, "/health/") == 200 })
	}

	type provoke func(t *testing.T) map[string]any
	firstError := func(c *client) map[string]any { return c.nextOf("error") }
	chatCases := map[string]provoke{
		"invalid_json": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, plain, "/ws/chat/")
			c.send(`not json`)
			return c.next()
		},
		"unknown_type": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, plain, "/ws/chat/")
			c.send(`{"type":"shout"}`)
			return c.next()
		},
		"invalid_message": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, plain, "/ws/chat/")
			c.send(`{"type":"chat","message":"   ","data":[]}`)
			return c.next()
		},
		"data_required": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, plain, "/ws/chat/")
			c.send(`{"type":"chat","message":"Hello"}`)
			return c.next()
		},
		"thread_busy": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, slow, "/ws/chat/")
			c.send(`{"type":"chat","message":"Tell me everything","data":[]}`)
			c.nextOf("token") // the answer streams
			c.send(`{"type":"chat","message":"And this?","data":[]}`)
			busy := firstError(c)
			c.send(`{"type":"cancel"}`)
			c.nextOf("end")
			return busy
		},
		"rate_limited": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, limited, "/ws/chat/")
			c.send(`{"type":"ping"}`)
			require.Equal(t, "pong", c.next()["type"])
			c.send(`{"type":"ping"}`)
			return c.next()
		},
		"unavailable": func(t *testing.T) map[string]any {
			t.Helper()
			in, proxy := postgresBehindProxy(t, 0)
			c := dial(t, in, "/ws/chat/")
			proxy.Disable()
			c.send(`{"type":"chat","message":"Hello","data":[]}`)
			return firstError(c)
		},
		"not_saved": func(t *testing.T) map[string]any {
			t.Helper()
			in, proxy := postgresBehindProxy(t, 100*time.Millisecond)
			c := dial(t, in, "/ws/chat/")
			c.send(`{"type":"chat","message":"Hello","data":[]}`)
			c.nextOf("token") // the thread is loaded; the turn is not saved yet
			proxy.Disable()
			for {
				m := c.next()
				require.NotEqual(t, "end", m["type"], "the turn cannot have been saved")
				if m["type"] == "error" {
					return m
				}
			}
		},
		"internal": func(t *testing.T) map[string]any {
			t.Helper()
			in, _ := bedrockInstance(t, fakebedrock.Script{
				Deltas:    []string{"Once upon a time.", " There"},
				Exception: &fakebedrock.Exception{After: 1, Type: "modelStreamErrorException", Message: "the model failed"},
			})
			c := dial(t, in, "/ws/chat/")
			c.send(`{"type":"chat","message":"Tell me a story","data":[]}`)
			return firstError(c)
		},
	}
	sessionCases := map[string]provoke{
		"invalid_json": func(t *testing.T) map[string]any {
			t.Helper()
			c := join(t, plain, uniqueSession(t), "agent")
			c.send(`{"type":`)
			return c.next()
		},
		"unknown_type": func(t *testing.T) map[string]any {
			t.Helper()
			c := join(t, plain, uniqueSession(t), "agent")
			c.send(`{"type":"shout"}`)
			return c.next()
		},
		"invalid_message": func(t *testing.T) map[string]any {
			t.Helper()
			c := join(t, plain, uniqueSession(t), "agent")
			c.send(`{"type":"broadcast","data":{}}`)
			return c.next()
		},
		"hello_required": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, plain, "/ws/session/"+uniqueSession(t)+"/")
			c.send(`{"type":"ping"}`)
			m := c.next()
			assert.Equal(t, 1008, c.closed(), "a socket without hello is closed")
			return m
		},
		"rate_limited": func(t *testing.T) map[string]any {
			t.Helper()
			c := dial(t, limited, "/ws/session/"+uniqueSession(t)+"/")
			c.send(`{"type":"hello","user_type":"agent"}`)
			require.Equal(t, "hello_ok", c.next()["type"])
			// The hello is not counted: the limit starts after it.
			c.send(`{"type":"ping"}`)
			require.Equal(t, "pong", c.next()["type"])
			c.send(`{"type":"ping"}`)
			return c.next()
		},
		"unavailable": func(t *testing.T) map[string]any {
			t.Helper()
			proxy := containers.NewToxiproxy().NewToxicProxy(t, redisAddr(t))
			url, err := containers.RedisURLVia(servers.Redis.URL(), proxy.Addr())
			require.NoError(t, err)
			in := start(t, withConfig(t, func(c *config.Config) { c.Store.RedisURL = url }))
			t.Cleanup(proxy.Enable) // before the instance stops
			c := join(t, in, uniqueSession(t), "agent")
			proxy.Disable()
			c.send(`{"type":"broadcast","msg":"anyone?"}`)
			return firstError(c)
		},
	}

	for _, ep := range []struct {
		name  schema.Endpoint
		cases map[string]provoke
	}{{schema.Chat, chatCases}, {schema.Session, sessionCases}} {
		var provoked []string
		for code := range ep.cases {
			provoked = append(provoked, code)
		}
		slices.Sort(provoked)
		assert.Equal(t, proto.ErrorCodes(ep.name), provoked, "the %s codes provoked here are the documented ones", ep.name)
		for _, code := range provoked {
			t.Run(string(ep.name)+"/"+code, func(t *testing.T) {
				m := ep.cases[code](t)
				assert.Equal(t, "error", m["type"], "%v", m)
				assert.Equal(t, code, m["code"], "%v", m)
				assert.NotEmpty(t, m["message"])
			})
		}
	}
}

// withConfig returns the development configuration with edit applied.
func withConfig(t *testing.T, edit func(*config.Config)) config.Config {
	t.Helper()
	c := defaults(t)
	edit(&c)
	return c
}

// postgresBehindProxy starts an instance whose PostgreSQL database is
// reached through a proxy the test can cut, and waits until it is ready.
func postgresBehindProxy(t *testing.T, tokenDelay time.Duration) (*instance, *containers.ToxicProxy) {
	t.Helper()
	dsn := servers.Postgres.NewDatabase(context.Background(), t)
	addr, err := containers.PostgresAddr(dsn)
	require.NoError(t, err)
	proxy := containers.NewToxiproxy().NewToxicProxy(t, addr)
	via, err := containers.PostgresDSNVia(dsn, proxy.Addr())
	require.NoError(t, err)
	in := start(t, withConfig(t, func(c *config.Config) {
		c.Store.DatabaseURL = via
		c.Conversation.LocalTokenDelay = tokenDelay
	}))
	t.Cleanup(proxy.Enable) // before the instance stops
	eventually(t, "the instance is ready", func() bool { return get(t, in, "/ready/") == 200 })
	return in, proxy
}

func redisAddr(t *testing.T) string {
	t.Helper()
	addr, err := containers.RedisAddr(servers.Redis.URL())
	require.NoError(t, err)
	return addr
}

// checkHTTP fails t when an HTTP answer of the server is not what
// docs/openapi.yaml says: the status must be documented for the path and
// the body must match its schema.
func checkHTTP(t *testing.T, method, path string, status int, body []byte) {
	t.Helper()
	api, err := schema.OpenAPI()
	require.NoError(t, err, "docs/openapi.yaml")
	if err := api.ValidateResponse(method, path, status, body); err != nil {
		t.Errorf("the answer is not what docs/openapi.yaml says: %v; body %.300s", err, body)
	}
}
