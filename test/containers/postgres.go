package containers

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Postgres is a PostgreSQL server for tests: a container, or the ready server
// named by TEST_DATABASE_URL. Tests should not use its own database but one
// of their own from NewDatabase.
type Postgres struct {
	dsn string
	ctr *testcontainers.DockerContainer // nil for a ready server
}

var postgresPort = network.MustParsePort("5432/tcp")

// StartPostgres starts a PostgreSQL container from TEST_POSTGRES_IMAGE
// (default postgres:16-alpine), or uses the server at TEST_DATABASE_URL when
// that is set. opts customise the container (network.WithNetwork puts it on a
// network of the test's); a ready server ignores them. The caller must
// Terminate it.
func StartPostgres(ctx context.Context, opts ...testcontainers.ContainerCustomizer) (*Postgres, error) {
	if dsn := os.Getenv("TEST_DATABASE_URL"); dsn != "" {
		waitCtx, cancel := context.WithTimeout(ctx, startupTimeout)
		defer cancel()
		if err := retry(waitCtx, func(ctx context.Context) error { return pingPostgres(ctx, dsn) }); err != nil {
			return nil, fmt.Errorf("containers: TEST_DATABASE_URL: %w", err)
		}
		databaseURLNotice.Do(func() {
			log.Print("containers: TEST_DATABASE_URL is set: tests use that PostgreSQL server, not a container")
		})
		return &Postgres{dsn: dsn}, nil
	}
	disableReaper()
	image := envOr("TEST_POSTGRES_IMAGE", "postgres:16-alpine")

	ctr, err := testcontainers.Run(ctx, image, append([]testcontainers.ContainerCustomizer{
		testcontainers.WithEnv(map[string]string{
			"POSTGRES_USER":     "postgres",
			"POSTGRES_PASSWORD": "postgres",
			"POSTGRES_DB":       "postgres",
			// As the official image's default (its locale is UTF-8): the
			// local stand-in's C locale would make SQL_ASCII databases,
			// whose jsonb refuses non-ASCII escapes such as \u00e9.
			"POSTGRES_INITDB_ARGS": "--encoding=UTF8",
		}),
		testcontainers.WithExposedPorts(postgresPort.String()),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{postgresPort: {{HostIP: loopback, HostPort: "0"}}}
		}),
		// The image initialises its data directory with a server on the unix
		// socket only, then starts the real one: the first query over TCP
		// that succeeds is on the real one.
		testcontainers.WithWaitStrategyAndDeadline(startupTimeout, wait.ForNop(
			func(ctx context.Context, target wait.StrategyTarget) error {
				dsn, err := postgresDSN(ctx, target)
				if err != nil {
					return err
				}
				return retry(ctx, func(ctx context.Context) error { return pingPostgres(ctx, dsn) })
			})),
	}, opts...)...)
	if err != nil {
		err = errors.Join(err, testcontainers.TerminateContainer(ctr))
		return nil, fmt.Errorf("containers: start postgres from %s: %w", image, err)
	}
	dsn, err := postgresDSN(ctx, ctr)
	if err != nil {
		err = errors.Join(err, testcontainers.TerminateContainer(ctr))
		return nil, fmt.Errorf("containers: start postgres from %s: %w", image, err)
	}
	return &Postgres{dsn: dsn, ctr: ctr}, nil
}

func postgresDSN(ctx context.Context, target wait.StrategyTarget) (string, error) {
	port, err := target.MappedPort(ctx, postgresPort.String())
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("postgres://postgres:postgres@127.0.0.1:%s/postgres?sslmode=disable", port.Port()), nil
}

func pingPostgres(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	// A one-shot connection: once the statement has run, a failed close
	// changes nothing for the caller.
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, "SELECT 1")
	return err
}

// DSN returns the connection string of the server's default database.
func (p *Postgres) DSN() string { return p.dsn }

// Terminate removes the container; for a ready server it does nothing.
func (p *Postgres) Terminate(ctx context.Context) error {
	if p.ctr == nil {
		return nil
	}
	if err := p.ctr.Terminate(ctx); err != nil {
		return fmt.Errorf("containers: terminate postgres: %w", err)
	}
	return nil
}

// NewDatabase creates an empty database with a name unique to this call and
// returns its DSN. The database is dropped when the test ends, even if
// connections to it are still open.
func (p *Postgres) NewDatabase(ctx context.Context, t testing.TB) string {
	t.Helper()
	name := databaseName(t)
	ident := pgx.Identifier{name}.Sanitize()
	if err := p.exec(ctx, "CREATE DATABASE "+ident); err != nil {
		t.Fatalf("containers: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		// ctx may be t.Context(), which is canceled before cleanups run.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := p.exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			t.Errorf("containers: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(p.dsn, name)
	if err != nil {
		t.Fatalf("containers: %v", err)
	}
	return dsn
}

// exec runs sql on a connection of its own to the server's default database.
func (p *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, p.dsn)
	if err != nil {
		return err
	}
	// A one-shot connection: once the statement has run, a failed close
	// changes nothing for the caller.
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, sql)
	return err
}

var notIdent = regexp.MustCompile(`[^a-z0-9]+`)

// databaseName derives a valid, unique database name from the test's name;
// PostgreSQL names hold at most 63 bytes.
func databaseName(t testing.TB) string {
	t.Helper()
	base := strings.Trim(notIdent.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(base) > 40 {
		base = base[:40]
	}
	return "test_" + base + "_" + randomSuffix()
}

// withDatabase returns dsn, a URL or a keyword/value string, with its
// database replaced by name.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse dsn: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil // the last setting wins
}
