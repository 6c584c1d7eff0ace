// Command wsserver is the WebSocket server for LLM chat with live token
// streaming and multi-subscriber session streams. See README.md.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "wsserver:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, logOut io.Writer) error {
	cfg, err := config.Load(".env")
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, logOut)
	log.Info("starting", "config", cfg)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return app.Run(ctx, cfg, log, ln)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	if c.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
