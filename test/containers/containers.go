// Package containers gives tests real Redis and PostgreSQL servers, started
// with testcontainers-go, or ready servers named by the environment.
//
// Start one server per package: the package's TestMain starts it once, runs
// the tests, and terminates it. Tests share the server and isolate
// themselves from one another: Redis tests put every key under Prefix(t),
// PostgreSQL tests each get a database of their own from
// Postgres.NewDatabase.
//
//	var testRedis *containers.Redis
//
//	func TestMain(m *testing.M) {
//		flag.Parse()
//		if testing.Short() {
//			os.Exit(m.Run()) // the tests that need Redis skip themselves
//		}
//		ctx := context.Background()
//		r, err := containers.StartRedis(ctx)
//		if err != nil {
//			log.Fatal(err)
//		}
//		testRedis = r
//		code := m.Run()
//		if err := r.Terminate(ctx); err != nil {
//			log.Print(err)
//		}
//		os.Exit(code)
//	}
//
// A package that needs both servers calls RunWithBoth from its TestMain.
//
// The environment chooses the servers:
//
//   - TEST_REDIS_IMAGE, TEST_POSTGRES_IMAGE: the images to run (default
//     redis:7-alpine and postgres:16-alpine). test/images/env.sh picks the
//     official images when they can be had and local stand-ins otherwise.
//   - TEST_REDIS_URL, TEST_DATABASE_URL: ready servers to use instead of
//     containers. Redis.Stop then cuts a local proxy, and Redis.Start
//     flushes the whole server, so point TEST_REDIS_URL at a throwaway one.
//
// Containers publish their ports on 127.0.0.1, so the docker daemon must run
// on this machine. Testcontainers' reaper (Ryuk) is disabled, since its image cannot always be
// pulled: containers are removed by Terminate only. A test binary killed
// before Terminate leaves them running; they carry the label
// org.testcontainers=true.
package containers

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// loopback is where containers publish their ports. testcontainers' own
// guess of the docker host's address is wrong when docker itself runs in a
// container (it picks that container's gateway), so the harness does not ask.
var loopback = netip.MustParseAddr("127.0.0.1")

// startupTimeout bounds how long a server may take to answer after its
// container starts (PostgreSQL initialises its data directory first).
const startupTimeout = 2 * time.Minute

// Prefix returns a key prefix unique to this test and this call, so tests
// sharing one Redis never see each other's keys.
func Prefix(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("test:%s:%s:", t.Name(), randomSuffix())
}

// randomSuffix returns 8 random lowercase letters and digits.
func randomSuffix() string {
	return strings.ToLower(rand.Text()[:8])
}

// disableReaper turns Ryuk off unless the environment says otherwise. It must
// run before the first testcontainers call, which reads its configuration
// once.
func disableReaper() {
	if _, ok := os.LookupEnv("TESTCONTAINERS_RYUK_DISABLED"); !ok {
		_ = os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

// isPortTaken reports whether err says a host port was taken by someone else
// between freePort and the container's start.
func isPortTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") ||
		strings.Contains(msg, "address already in use")
}

// retry calls try until it succeeds or ctx ends, pausing briefly between
// attempts, and returns try's last error if ctx ends first.
func retry(ctx context.Context, try func(ctx context.Context) error) error {
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := try(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// The notices that a ready server replaces the container, logged once per
// test binary rather than once per StartRedis or StartPostgres.
var redisURLNotice, databaseURLNotice sync.Once
