package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered file of migrations/: NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrationLock is the advisory lock key that serialises migrations across
// instances: "wsserver" in ASCII.
const migrationLock int64 = 0x7773736572766572

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`

// loadMigrations reads the *.sql files of fsys's migrations folder. Their
// names must be NNNN_name.sql, numbered 1, 2, 3... with no gap, so that a
// version means the same schema everywhere.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration // names come sorted
	for _, p := range names {
		base := strings.TrimSuffix(path.Base(p), ".sql")
		num, name, ok := strings.Cut(base, "_")
		version, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != 4 || name == "" {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", p)
		}
		if want := len(out) + 1; version != want {
			return nil, fmt.Errorf("migration %s: version %d, want %d", p, version, want)
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: version, name: name, sql: string(body)})
	}
	if len(out) == 0 {
		return nil, errors.New("no migrations")
	}
	return out, nil
}

// migrate applies the migrations the database lacks, each in a transaction
// of its own, and reports how many it applied.
//
// Instances that start together race here. Each transaction first takes a
// transaction-scoped advisory lock, then looks whether its version is
// recorded: the first instance applies it, the others wait for the lock and
// find it done. The lock ends with its transaction, so neither a cancelled
// start nor a dead process can leave it held.
func migrate(ctx context.Context, pool *pgxpool.Pool, migrations []migration, log *slog.Logger) (int, error) {
	applied := 0
	for _, m := range migrations {
		done, err := applyMigration(ctx, pool, m)
		if err != nil {
			return applied, fmt.Errorf("postgres: migrate to %04d_%s: %w", m.version, m.name, err)
		}
		if done {
			applied++
			log.InfoContext(ctx, "postgres: migration applied", "version", m.version, "name", m.name)
		}
	}
	var newest int
	err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&newest)
	if err != nil {
		return applied, fmt.Errorf("postgres: migrate: %w", err)
	}
	if last := migrations[len(migrations)-1].version; newest > last {
		// A newer release migrated this database: this one may still work,
		// if the newer migrations only added to the schema.
		log.WarnContext(ctx, "postgres: the database schema is newer than this server", "schema_version", newest, "server_version", last)
	}
	return applied, nil
}

// applyMigration applies m unless it is recorded, and reports whether it
// did.
func applyMigration(ctx context.Context, pool *pgxpool.Pool, m migration) (bool, error) {
	applied := false
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		// Under the lock: CREATE TABLE IF NOT EXISTS is not safe against a
		// concurrent one.
		if _, err := tx.Exec(ctx, createMigrationsTable); err != nil {
			return err
		}
		var recorded bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, m.version).Scan(&recorded)
		if err != nil || recorded {
			return err
		}
		// Without arguments Exec uses the simple protocol, which runs the
		// file's many statements.
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return err
		}
		applied = true
		return nil
	})
	return applied && err == nil, err
}
