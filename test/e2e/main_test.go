// Package e2e runs whole wsserver instances in the test process, on
// loopback, sharing one Redis started by the harness, and talks to them
// as clients do.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/adapters/redis"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
	"github.com/wsserver/wsserver/test/containers"
	"github.com/wsserver/wsserver/test/wstest"
)

// wait bounds every wait of these tests. A passing run never comes close.
const wait = 20 * time.Second

var (
	// servers are the package's Redis and PostgreSQL, started by TestMain,
	// and its Redis Cluster when E2E_REDIS names one.
	servers containers.Both
	// onCluster is E2E_REDIS: empty for the single Redis; "cluster" runs
	// the instances on a Redis Cluster of three masters with plain
	// PUBLISH, "cluster-sharded" with sharded pub/sub in 16 partitions.
	onCluster = os.Getenv("E2E_REDIS")
)

func TestMain(m *testing.M) {
	switch onCluster {
	case "":
	case "cluster", "cluster-sharded":
		servers.WantCluster = true
	default:
		fmt.Fprintf(os.Stderr, "e2e: E2E_REDIS=%q: want empty, cluster or cluster-sharded\n", onCluster)
		os.Exit(2)
	}
	containers.RunWithBoth(m, "e2e", &servers)
}

// redisURL is the Redis the instances share: the single one, or the
// cluster's when E2E_REDIS names one.
func redisURL() string {
	if servers.Cluster != nil {
		return servers.Cluster.URL()
	}
	return servers.Redis.URL()
}

// useRedis points cfg at the shared Redis (redisURL), as a cluster when
// E2E_REDIS names one.
func useRedis(cfg *config.Config, url string) {
	cfg.Store.RedisURL = url
	if servers.Cluster != nil {
		cfg.Store.RedisCluster = redis.ClusterOn
		if onCluster == "cluster-sharded" {
			cfg.Store.ShardedPubSubPartitions = 16
		}
	}
}

// singleRedisOnly skips a test that stops, restarts or proxies the one
// Redis, which a cluster run does not have.
func singleRedisOnly(t *testing.T) {
	t.Helper()
	if servers.Cluster != nil {
		t.Skipf("E2E_REDIS=%s: this test stops or proxies the single Redis; it runs without E2E_REDIS", onCluster)
	}
}

// instance is one running server.
type instance struct {
	id     string
	addr   string
	stop   context.CancelFunc
	result chan error
}

// defaults returns the configuration of a development server with no other
// setting, as `DJANGO_DEBUG=1 go run ./cmd/wsserver` has it.
func defaults(t *testing.T) config.Config {
	t.Helper()
	t.Setenv("DJANGO_DEBUG", "1")
	cfg, err := config.Load("")
	require.NoError(t, err)
	return cfg
}

// start runs an instance with cfg until the test ends.
func start(t *testing.T, cfg config.Config) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	in := &instance{id: cfg.InstanceID, addr: ln.Addr().String(), stop: cancel, result: make(chan error, 1)}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("instance", cfg.InstanceID)
	}
	go func() { in.result <- app.Run(ctx, cfg, log, ln) }()
	t.Cleanup(func() { in.shutdown(t) })
	return in
}

// shutdown stops the instance as SIGTERM does and returns Run's result.
func (in *instance) shutdown(t *testing.T) error {
	t.Helper()
	in.stop()
	select {
	case err, ok := <-in.result:
		if !ok {
			return nil
		}
		close(in.result)
		return err
	case <-time.After(wait):
		t.Errorf("instance %s did not stop", in.id)
		return nil
	}
}

// client is a wstest.Client bound to the test that opened it.
type client struct {
	*wstest.Client
	t *testing.T
}

func dial(t *testing.T, in *instance, path string) *client {
	t.Helper()
	return &client{Client: wstest.Dial(t, "ws://"+in.addr+path, nil, wait), t: t}
}

func (c *client) send(v string) {
	c.t.Helper()
	c.Send(c.t, v)
}

// next returns the next message.
func (c *client) next() map[string]any {
	c.t.Helper()
	return c.Next(c.t)
}

// nextOf skips messages until one of type typ.
func (c *client) nextOf(typ string) map[string]any {
	c.t.Helper()
	return c.NextOf(c.t, typ)
}

// closed waits for the connection to end and returns the close code.
func (c *client) closed() int {
	c.t.Helper()
	return c.Closed(c.t)
}

// join opens a session socket on in and says hello.
func join(t *testing.T, in *instance, session, userType string) *client {
	t.Helper()
	// The key is ignored by instances that need none.
	c := dial(t, in, "/ws/session/"+session+"/?authorization="+apiKey)
	c.send(fmt.Sprintf(`{"type":"hello","user_type":%q,"client_type":"web"}`, userType))
	ok := c.next()
	require.Equal(t, "hello_ok", ok["type"], "%v", ok)
	require.Equal(t, session, ok["session_id"])
	return c
}

func get(t *testing.T, in *instance, path string) int {
	t.Helper()
	resp, err := http.Get("http://" + in.addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	checkHTTP(t, http.MethodGet, path, resp.StatusCode, raw)
	return resp.StatusCode
}

// eventually retries try until it reports true, at most wait long.
func eventually(t *testing.T, what string, try func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !try() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
