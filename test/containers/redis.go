package containers

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/redis/rueidis"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Redis is a Redis server for tests: a container, or the ready server named
// by TEST_REDIS_URL served through a local proxy. Its URL stays the same
// across Stop and Start. Its methods are not safe for concurrent use.
type Redis struct {
	url string

	// Exactly one of ctr and proxy is set.
	ctr      *testcontainers.DockerContainer
	proxy    *proxy
	upstream string // TEST_REDIS_URL, flushed by Start
}

var redisPort = network.MustParsePort("6379/tcp")

// StartRedis starts a Redis container from TEST_REDIS_IMAGE (default
// redis:7-alpine), without persistence, published on a fixed port of
// 127.0.0.1 so that Stop and Start keep its URL. When TEST_REDIS_URL is set
// it uses that server instead, through a proxy on 127.0.0.1. opts customise
// the container (network.WithNetwork puts it on a network of the test's);
// a ready server ignores them. The caller must Terminate it.
func StartRedis(ctx context.Context, opts ...testcontainers.ContainerCustomizer) (*Redis, error) {
	if upstream := os.Getenv("TEST_REDIS_URL"); upstream != "" {
		return startRedisProxy(ctx, upstream)
	}
	disableReaper()
	image := envOr("TEST_REDIS_IMAGE", "redis:7-alpine")

	// The free port may be taken before the container binds it: try again.
	var err error
	for range 3 {
		var r *Redis
		r, err = runRedis(ctx, image, opts)
		if err == nil {
			return r, nil
		}
		if !isPortTaken(err) {
			break
		}
	}
	return nil, fmt.Errorf("containers: start redis from %s: %w", image, err)
}

func runRedis(ctx context.Context, image string, opts []testcontainers.ContainerCustomizer) (*Redis, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("find a free port: %w", err)
	}
	r := &Redis{url: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
	ctr, err := testcontainers.Run(ctx, image, append([]testcontainers.ContainerCustomizer{
		testcontainers.WithCmd("redis-server", "--save", "", "--appendonly", "no", "--protected-mode", "no"),
		testcontainers.WithExposedPorts(redisPort.String()),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{redisPort: {{
				HostIP:   loopback,
				HostPort: strconv.Itoa(port),
			}}}
		}),
		// Docker's port proxy accepts connections before Redis listens, so
		// only a real PING tells that Redis is up. Container.Start runs this
		// again after a restart.
		testcontainers.WithWaitStrategyAndDeadline(startupTimeout, wait.ForNop(
			func(ctx context.Context, _ wait.StrategyTarget) error { return waitRedis(ctx, r.url) })),
	}, opts...)...)
	if err != nil {
		return nil, errors.Join(err, testcontainers.TerminateContainer(ctr))
	}
	r.ctr = ctr
	return r, nil
}

func startRedisProxy(ctx context.Context, upstream string) (*Redis, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("containers: TEST_REDIS_URL: %w", err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "6379")
	}
	p := &proxy{target: target}
	if err := p.listen("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("containers: redis proxy: %w", err)
	}
	local := *u
	local.Host = p.addr
	r := &Redis{url: local.String(), proxy: p, upstream: upstream}
	if err := waitRedis(ctx, r.url); err != nil {
		p.close()
		return nil, fmt.Errorf("containers: TEST_REDIS_URL: %w", err)
	}
	redisURLNotice.Do(func() {
		//nolint:gosec // G706: test harness; target comes from our own TEST_REDIS_URL, p.addr from our listener
		log.Printf("containers: TEST_REDIS_URL is set: tests use the Redis at %s through a proxy at %s, not a container", target, p.addr)
	})
	return r, nil
}

// URL returns the redis:// URL of the server, the same after Stop and Start.
func (r *Redis) URL() string { return r.url }

// Stop stops the server: connections are cut and new ones refused until
// Start.
func (r *Redis) Stop(ctx context.Context) error {
	if r.proxy != nil {
		r.proxy.close()
		return nil
	}
	timeout := 10 * time.Second
	if err := r.ctr.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("containers: stop redis: %w", err)
	}
	return nil
}

// Start starts the server again after Stop, on the same URL, and returns
// once it answers. Like a restart without persistence, it loses every key.
func (r *Redis) Start(ctx context.Context) error {
	if r.proxy != nil {
		if err := flushAll(ctx, r.upstream); err != nil {
			return fmt.Errorf("containers: start redis: %w", err)
		}
		if err := r.proxy.listen(r.proxy.addr); err != nil {
			return fmt.Errorf("containers: start redis: %w", err)
		}
		return nil
	}
	if err := r.ctr.Start(ctx); err != nil {
		return fmt.Errorf("containers: start redis: %w", err)
	}
	return nil
}

// Terminate stops the server for good and removes its container.
func (r *Redis) Terminate(ctx context.Context) error {
	if r.proxy != nil {
		r.proxy.close()
		return nil
	}
	if err := r.ctr.Terminate(ctx); err != nil {
		return fmt.Errorf("containers: terminate redis: %w", err)
	}
	return nil
}

// waitRedis returns once the server at url answers PING, or fails after
// startupTimeout.
func waitRedis(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	return retry(ctx, func(ctx context.Context) error {
		return redisDo(ctx, url, func(c rueidis.Client) rueidis.Completed { return c.B().Ping().Build() })
	})
}

func flushAll(ctx context.Context, url string) error {
	return redisDo(ctx, url, func(c rueidis.Client) rueidis.Completed { return c.B().Flushall().Build() })
}

// redisDo runs one command on a fresh connection to url.
func redisDo(ctx context.Context, url string, cmd func(rueidis.Client) rueidis.Completed) error {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return err
	}
	opt.ForceSingleClient = true
	opt.DisableCache = true
	opt.DisableRetry = true
	opt.Dialer.Timeout = 2 * time.Second
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Do(ctx, cmd(c)).Error()
}
