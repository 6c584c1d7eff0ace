package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// commonFlags are the flags of the connection: where to connect, how, and
// what to report.
type commonFlags struct {
	urls             string
	key              string
	prefix           string
	pids             string
	noHelloOK        bool
	handshakeTimeout time.Duration
	helloTimeout     time.Duration
	connectConc      int
	connectRate      float64
	jsonOut          bool
	quiet            bool
}

// addCommonFlags registers the flags of session sockets: the connection
// flags and those of the hello handshake.
func addCommonFlags(fs *flag.FlagSet) *commonFlags {
	f := addConnectionFlags(fs, connectionHelp{
		url:    "server base `URLs`, comma-separated (loopback only); sockets alternate between them, so every session has sockets on every server",
		prefix: "session id `prefix` (default: <command>-<random>-, unique per run)",
		conc:   "connects (handshake + hello) in flight at once",
	})
	fs.BoolVar(&f.noHelloOK, "no-hello-ok", false, "the server sends no hello_ok (Django reference): hello is done once sent")
	fs.DurationVar(&f.helloTimeout, "hello-timeout", 10*time.Second, "wait this long for hello_ok (or a first message) before counting a socket failed")
	return f
}

// connectionHelp is the help of the connection flags whose meaning
// depends on the subcommand.
type connectionHelp struct{ url, prefix, conc string }

// addConnectionFlags registers the flags every subcommand has: where to
// connect, how fast, and how to report.
func addConnectionFlags(fs *flag.FlagSet, help connectionHelp) *commonFlags {
	f := &commonFlags{}
	fs.StringVar(&f.urls, "url", "ws://127.0.0.1:8000", help.url)
	fs.StringVar(&f.key, "key", "", "API `key`, sent as ?authorization=")
	fs.StringVar(&f.prefix, "prefix", "", help.prefix)
	fs.StringVar(&f.pids, "pid", "", "server `PIDs`, comma-separated in -url order, to report VmRSS (and fanout: CPU while publishing)")
	fs.DurationVar(&f.handshakeTimeout, "handshake-timeout", 10*time.Second, "WebSocket handshake timeout")
	fs.IntVar(&f.connectConc, "connect-conc", 64, help.conc)
	fs.Float64Var(&f.connectRate, "connect-rate", 0, "connects started per second (0: no limit)")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as one JSON object (no progress lines)")
	fs.BoolVar(&f.quiet, "q", false, "no progress lines")
	return f
}

// target is where and how a run connects, validated from commonFlags.
type target struct {
	urls             []*url.URL
	key              string
	prefix           string
	pids             []int
	noHelloOK        bool
	handshakeTimeout time.Duration
	helloTimeout     time.Duration
	connectConc      int
	connectRate      float64
}

// target validates the flags. cmd names the default session prefix.
func (f *commonFlags) target(cmd string) (*target, error) {
	t := &target{
		key:              f.key,
		prefix:           f.prefix,
		noHelloOK:        f.noHelloOK,
		handshakeTimeout: f.handshakeTimeout,
		helloTimeout:     f.helloTimeout,
		connectConc:      f.connectConc,
		connectRate:      f.connectRate,
	}
	for s := range strings.SplitSeq(f.urls, ",") {
		u, err := parseTarget(strings.TrimSpace(s))
		if err != nil {
			return nil, err
		}
		t.urls = append(t.urls, u)
	}
	if f.pids != "" {
		for s := range strings.SplitSeq(f.pids, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || pid <= 0 {
				return nil, fmt.Errorf("-pid: bad pid %q", s)
			}
			t.pids = append(t.pids, pid)
		}
		if len(t.pids) != len(t.urls) {
			return nil, fmt.Errorf("-pid: %d pids for %d urls (give one per -url, same order)", len(t.pids), len(t.urls))
		}
	}
	if t.prefix == "" {
		t.prefix = fmt.Sprintf("%s-%06x-", cmd, rand.Uint32()>>8)
	}
	for _, c := range t.prefix {
		if !sessionIDChar(c) {
			return nil, fmt.Errorf("-prefix: %q is not allowed in a session id (A-Z a-z 0-9 _ - .)", c)
		}
	}
	switch {
	case t.handshakeTimeout <= 0:
		return nil, errors.New("-handshake-timeout must be positive")
	case t.helloTimeout <= 0:
		return nil, errors.New("-hello-timeout must be positive")
	case t.connectConc < 1:
		return nil, errors.New("-connect-conc must be at least 1")
	case t.connectRate < 0:
		return nil, errors.New("-connect-rate must not be negative")
	}
	return t, nil
}

// sessionIDChar reports whether c may appear in a session id on both wsserver
// (which also allows ':') and the reference server.
func sessionIDChar(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
}

// parseTarget parses a ws:// base URL and refuses anything but a loopback
// host: wsbench is for measuring a server on the same machine.
func parseTarget(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("-url %q: scheme must be ws", s)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("-url %q: only loopback targets are allowed", s)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("-url %q: port required", s)
	}
	return &url.URL{Scheme: "ws", Host: u.Host}, nil
}

// endpoint is the URL of path on server i, with the API key.
func (t *target) endpoint(server int, path string) string {
	s := t.urls[server].String() + path
	if t.key != "" {
		s += "?authorization=" + url.QueryEscape(t.key)
	}
	return s
}

// sessionURL is the URL of session name on server i.
func (t *target) sessionURL(server int, name string) string {
	return t.endpoint(server, "/ws/session/"+name+"/")
}

// chatURL is the URL of the chat endpoint on server i.
func (t *target) chatURL(server int) string { return t.endpoint(server, "/ws/chat/") }

// logger prints progress lines unless they are turned off.
type logger struct{ w io.Writer }

func (f *commonFlags) logger(stdout io.Writer) logger {
	if f.jsonOut || f.quiet {
		return logger{}
	}
	return logger{w: stdout}
}

func (l logger) printf(format string, args ...any) {
	if l.w != nil {
		_, _ = fmt.Fprintf(l.w, "# "+format+"\n", args...) // progress lines: a failed write has nowhere to be reported
	}
}

// parseFlags parses a subcommand's args. help is true after -h, which has
// printed the usage: the caller returns nil so that -h exits 0.
func parseFlags(fs *flag.FlagSet, args []string) (help bool, err error) {
	err = fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return true, nil
	}
	if err == nil && fs.NArg() > 0 {
		return false, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	return false, err
}
