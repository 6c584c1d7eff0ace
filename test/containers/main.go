package containers

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"
)

// Both is a Redis and a PostgreSQL shared by one package's tests, and a
// Redis Cluster when WantCluster is set.
type Both struct {
	Redis    *Redis
	Postgres *Postgres

	WantCluster bool
	Cluster     *Cluster
}

// RunWithBoth is the TestMain of a package whose tests need Redis and
// PostgreSQL: it starts both into s, runs m, terminates both and exits
// with m's code. Under -short (no containers) it runs none of the tests and
// says so. name prefixes its messages.
func RunWithBoth(m *testing.M, name string, s *Both) {
	flag.Parse()
	if testing.Short() {
		fmt.Fprintf(os.Stderr, "%s: -short: every test here needs Redis and PostgreSQL containers; none runs\n", name)
		os.Exit(0)
	}
	ctx := context.Background()
	var err error
	if s.Redis, err = StartRedis(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: start redis: %v\n", name, err)
		os.Exit(1)
	}
	if s.Postgres, err = StartPostgres(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: start postgres: %v\n", name, err)
		_ = s.Redis.Terminate(ctx)
		os.Exit(1)
	}
	if s.WantCluster {
		if s.Cluster, err = StartCluster(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "%s: start redis cluster: %v\n", name, err)
			_ = s.Redis.Terminate(ctx)
			_ = s.Postgres.Terminate(ctx)
			os.Exit(1)
		}
	}
	code := m.Run()
	if s.Cluster != nil {
		if err := s.Cluster.Terminate(ctx); err != nil {
			fmt.Fprintf(os.Stderr, "%s: terminate redis cluster: %v\n", name, err)
		}
	}
	if err := s.Redis.Terminate(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: terminate redis: %v\n", name, err)
	}
	if err := s.Postgres.Terminate(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "%s: terminate postgres: %v\n", name, err)
	}
	os.Exit(code)
}
