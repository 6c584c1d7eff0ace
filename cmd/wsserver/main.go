// Command wsserver is the WebSocket server for LLM chat with live token
// streaming and multi-subscriber session streams. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
	"github.com/wsserver/wsserver/core/logctx"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		if err := healthcheck(context.Background(), healthTimeout); err != nil {
			fmt.Fprintln(os.Stderr, "wsserver healthcheck:", err)
			os.Exit(1)
		}
		return
	}
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
	log.InfoContext(ctx, "starting", "config", cfg)
	for _, w := range cfg.Warnings {
		log.WarnContext(ctx, w)
	}
	ln, err := net.Listen("tcp", cfg.HTTP.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return app.Run(ctx, cfg, log, ln)
}

// healthTimeout bounds one healthcheck, below the Dockerfile's HEALTHCHECK
// --timeout so that a hung server reads as unhealthy, not as a timeout.
const healthTimeout = 2 * time.Second

// healthcheck asks the server configured here (LISTEN_ADDR, from the
// environment or .env, as run reads it) for /health/ and returns nil on 200.
// The container's HEALTHCHECK runs it: a scratch image has no curl.
func healthcheck(ctx context.Context, timeout time.Duration) error {
	cfg, err := config.Load(".env")
	if err != nil {
		return err
	}
	url, err := healthURL(cfg.HTTP.ListenAddr)
	if err != nil {
		return err
	}
	return checkHealth(ctx, url, timeout)
}

// healthURL returns the /health/ URL of a server listening on addr. A
// listener on every interface is asked on 127.0.0.1.
func healthURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("LISTEN_ADDR: %w", err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/health/", nil
}

// checkHealth GETs url and returns nil when it answers 200 within timeout.
func checkHealth(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No proxy from the environment: the server is on this host. A redirect
	// is an answer, and not 200.
	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // the status is all that is read
	if resp.StatusCode != http.StatusOK {
		return errors.New(url + ": " + resp.Status)
	}
	return nil
}

// newLogger is the one logger of the process. Its handler adds the ids a
// request's context carries (logctx) to every line logged with it.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.Level}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if c.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(logctx.NewHandler(h))
}
