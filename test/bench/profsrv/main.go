// Command profsrv is wsserver with Go's profiler: net/http/pprof on
// PPROF_ADDR (loopback only), block and mutex profiles on. It is a
// benchmark tool, not a server to deploy: docs/BENCHMARKS.md ("Round
// trips per chat") takes the chat runs' CPU, allocation and block
// profiles with it. Every other setting is wsserver's own.
//
//	go build -o profsrv ./test/bench/profsrv
//	PPROF_ADDR=127.0.0.1:6060 REDIS_URL=... DATABASE_URL=... ./profsrv
//	go tool pprof -top profsrv 'http://127.0.0.1:6060/debug/pprof/profile?seconds=6'
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" //nolint:gosec // G108: the profiler is this tool's purpose, on a loopback address
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "profsrv:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	addr := os.Getenv("PPROF_ADDR")
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("PPROF_ADDR=%q: want a loopback host:port, such as 127.0.0.1:6060", addr)
	}
	// Every blocking event of 10 µs or more, and one contended mutex in
	// ten, are sampled.
	runtime.SetBlockProfileRate(10_000)
	runtime.SetMutexProfileFraction(10)
	prof := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := prof.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "profsrv: pprof:", err)
		}
	}()
	defer func() { _ = prof.Close() }() // the profiler's listener; the server's own shutdown is what matters

	cfg, err := config.Load(".env")
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Log.Level}))
	ln, err := net.Listen("tcp", cfg.HTTP.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return app.Run(ctx, cfg, log, ln)
}
