// Command wsbench is the load tool for wsserver's session streams
// (/ws/session/<id>/, PROTOCOL.md §4) and chat (/ws/chat/, PROTOCOL.md §3). It opens many
// WebSockets against one or more loopback servers and measures broadcast
// fan-out, idle memory per socket, presence exactness and streamed chat
// answers. It also speaks to the Django reference server, which sends no
// hello_ok (use -no-hello-ok there).
//
// Every subcommand is a command run in the frame of runner.go: flags, the
// servers' RSS, connecting (connect.go, through one connectAll), closing
// and the common parts of the report (report.go). Each subcommand lives in
// its own file (fanout.go, idle.go, presence.go, and chat.go with the chat
// connections in chatslot.go and their messages in chatproto.go); the
// socket client is in client.go, flags shared by all subcommands in
// flags.go, session message parsing in proto.go and statistics in stats.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `wsbench — load tool for wsserver session streams (/ws/session/<id>/) and chat (/ws/chat/).

Usage:
  wsbench fanout   [flags]   N sockets over S sessions, P publishers, R broadcasts/s
  wsbench idle     [flags]   hold N idle sockets, report server RSS per socket
  wsbench presence [flags]   K sockets, Q presence queries: latency and exactness
  wsbench chat     [flags]   C connections chatting back to back: time to
                             session_started, to first token, token gaps, tokens/s
  wsbench <command> -h       flags of a command

Targets must be loopback (ws://127.0.0.1:PORT, ws://localhost:PORT). Several
-url values (comma-separated) spread the sockets evenly over the servers, each
session on all of them; -pid (same order) reports each server's VmRSS. Against
the Django reference server add -no-hello-ok (it sends no hello_ok). The last
line of a report is wsbench's own CPU use (roughly 15-25 µs per delivery on a
small VM): when it nears what the machine can spare beside the server, the
tool, not the server, is the limit. Ctrl-C stops a run and still prints the report; a
second Ctrl-C exits at once.

Examples (AUTH_API_KEY in $KEY, server PID in $PID):
  # 10,000 idle sockets: server RSS per socket (target <= 16 KiB)
  wsbench idle -url ws://127.0.0.1:8000 -key "$KEY" -sockets 10000 \
      -duration 60s -settle 10s -pid "$PID"
  # 1,000 sessions x 10 subscribers, 1,000 broadcasts/s for 60 s (10,000 deliveries/s)
  wsbench fanout -url ws://127.0.0.1:8000 -key "$KEY" -sockets 10000 \
      -sessions 1000 -rate 1000 -duration 60s -pid "$PID"
  # the same at 2,000 broadcasts/s (20,000 deliveries/s)
  wsbench fanout -url ws://127.0.0.1:8000 -key "$KEY" -sockets 10000 \
      -sessions 1000 -rate 2000 -duration 60s -pid "$PID"
  # one session of 5,000 sockets at 20 broadcasts/s (100,000 deliveries/s;
  # wsbench alone needs 1.5-2 cores for this: check its cpu line)
  wsbench fanout -url ws://127.0.0.1:8000 -key "$KEY" -sockets 5000 \
      -sessions 1 -rate 20 -duration 60s -pid "$PID"
  # two instances sharing Redis: half the sockets on each
  wsbench fanout -url ws://127.0.0.1:8000,ws://127.0.0.1:8001 -pid "$PID1,$PID2" \
      -key "$KEY" -sockets 10000 -sessions 1000 -rate 1000 -duration 60s
  # presence exactness: 1,000 sockets over 10 sessions, 5,000 queries from 8 sockets
  wsbench presence -url ws://127.0.0.1:8000 -key "$KEY" -sockets 1000 \
      -sessions 10 -queries 5000 -queriers 8
  # 250 concurrent chats on new threads, the local model at 50 tokens/s
  # (LOCAL_MODEL_TOKEN_DELAY=20ms): 12,500 tokens/s delivered
  wsbench chat -url ws://127.0.0.1:8000 -key "$KEY" -conns 250 -new-thread \
      -duration 60s -pid "$PID"
  # 20 connections chatting back to back, no model delay (LOCAL_MODEL_TOKEN_DELAY=0);
  # a socket then sends over 100 chats/s: raise the server's RATE_LIMIT_PER_SEC,
  # or rate_limited errors are counted
  wsbench chat -url ws://127.0.0.1:8000 -key "$KEY" -conns 20 -new-thread \
      -duration 30s -pid "$PID"
  # chats spread over two instances sharing Redis and PostgreSQL
  wsbench chat -url ws://127.0.0.1:8000,ws://127.0.0.1:8001 -pid "$PID1,$PID2" \
      -key "$KEY" -conns 20 -new-thread -duration 30s
  # the Django reference server (no hello_ok, no auth)
  wsbench fanout -url ws://127.0.0.1:8790 -no-hello-ok -sockets 200 \
      -sessions 20 -rate 100 -duration 10s -pid "$DAPHNE_PID"
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the run winds down and reports; restoring the
	// default handling lets a second Ctrl-C end the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "wsbench:", err)
		os.Exit(1)
	}
}

// run dispatches to a subcommand. Reports, progress lines and flag help go to
// stdout; the returned error is for main to print.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		_, _ = io.WriteString(stdout, usage)
		return errors.New("missing command")
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "fanout":
		err = fanoutCommand.exec(ctx, rest, stdout)
	case "idle":
		err = idleCommand.exec(ctx, rest, stdout)
	case "presence":
		err = presenceCommand.exec(ctx, rest, stdout)
	case "chat":
		err = chatCommand.exec(ctx, rest, stdout)
	case "-h", "-help", "--help", "help":
		_, err = io.WriteString(stdout, usage)
		return err
	default:
		_, _ = io.WriteString(stdout, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd, err)
	}
	return nil
}
