package deployments

// These tests check what can be checked without an AWS account or a container
// registry: the deployment files parse, agree with each other, and agree with the
// server's defaults, which come from adapters/config rather than from copies here.
// Each check is a function returning the problems it found; the *ChecksCatch tests
// and the "catches" subtests feed it broken copies of the real files, so no check
// can pass vacuously. External validators (systemd-analyze, cfn-lint, docker-compose
// or docker compose, nginx, bash) run when they are installed and are skipped,
// loudly, when not (see externalTool); .ci/run installs every one that Debian
// packages and sets WSSERVER_CI=1, under which a missing one fails instead.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
)

const (
	unitPath     = "systemd/wsserver.service"
	templatePath = "aws/wsserver.yaml"
	nginxPath    = "compose/nginx.conf"
	composePath  = "../compose.yaml"
	envExample   = "../.env.example"
)

// defaults returns the server's configuration with nothing set: every variable that
// .env.example names (and the aliases) is emptied, which Load treats as unset.
func defaults(t *testing.T) config.Config {
	t.Helper()
	for _, name := range append(envNames(t), "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS") {
		t.Setenv(name, "")
	}
	// DEBUG off (its default) refuses to start without secrets; the defaults read here
	// (limits, grace, ping) do not depend on it.
	t.Setenv("DJANGO_DEBUG", "1")
	cfg, err := config.Load("")
	require.NoError(t, err)
	require.Positive(t, cfg.HTTP.ShutdownGrace, "SHUTDOWN_GRACE default")
	require.Positive(t, cfg.WebSocket.PingInterval, "WS_PING_INTERVAL default")
	return cfg
}

var envLine = regexp.MustCompile(`(?m)^(?:# )?([A-Z][A-Z0-9_]*)=`)

// envNames lists the variables .env.example documents, set or commented out.
func envNames(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, m := range envLine.FindAllStringSubmatch(read(t, envExample), -1) {
		names = append(names, m[1])
	}
	require.NotEmpty(t, names)
	return names
}

func read(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

// mutation is a broken copy of a file: old replaced by new.
type mutation struct {
	name     string
	old, new string
}

func (m mutation) apply(t *testing.T, text string) string {
	t.Helper()
	require.Contains(t, text, m.old, "mutation %q no longer applies: update the test", m.name)
	return strings.Replace(text, m.old, m.new, 1)
}

// The systemd unit.

// unit is a parsed unit file: section -> key -> values in file order (keys such as
// SystemCallFilter may repeat).
type unit map[string]map[string][]string

func parseUnit(text string) (unit, error) {
	u := unit{}
	section := ""
	for n, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if u[section] == nil {
				u[section] = map[string][]string{}
			}
		default:
			key, value, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				return nil, fmt.Errorf("line %d: not key=value in a section: %q", n+1, line)
			}
			key = strings.TrimSpace(key)
			u[section][key] = append(u[section][key], strings.TrimSpace(value))
		}
	}
	return u, nil
}

// last returns the value in force for a key (the last one), and whether it is set.
func (u unit) last(section, key string) (string, bool) {
	v := u[section][key]
	if len(v) == 0 {
		return "", false
	}
	return v[len(v)-1], true
}

var spanPart = regexp.MustCompile(`^(\d+(?:\.\d+)?)(us|ms|s|sec|seconds?|m|min|minutes?|h|hr|hours?)?$`)

// parseSpan reads a systemd time span: "40s", "1min 30s", "90" (seconds).
func parseSpan(s string) (time.Duration, error) {
	units := map[string]time.Duration{
		"us": time.Microsecond, "ms": time.Millisecond,
		"": time.Second, "s": time.Second, "sec": time.Second, "second": time.Second, "seconds": time.Second,
		"m": time.Minute, "min": time.Minute, "minute": time.Minute, "minutes": time.Minute,
		"h": time.Hour, "hr": time.Hour, "hour": time.Hour, "hours": time.Hour,
	}
	var total time.Duration
	parts := strings.Fields(s)
	if len(parts) == 0 {
		return 0, fmt.Errorf("empty time span")
	}
	for _, p := range parts {
		m := spanPart.FindStringSubmatch(p)
		if m == nil {
			return 0, fmt.Errorf("time span %q: cannot read %q", s, p)
		}
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, err
		}
		total += time.Duration(f * float64(units[m[2]]))
	}
	return total, nil
}

// checkUnit returns what is wrong with the unit for a server with these defaults.
func checkUnit(text string, cfg config.Config) []string {
	u, err := parseUnit(text)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	want := func(key, value string) {
		if got, _ := u.last("Service", key); got != value {
			bad("%s=%q, want %q", key, got, value)
		}
	}

	// Stopping: SIGTERM, then strictly more than SHUTDOWN_GRACE before SIGKILL.
	if sig, ok := u.last("Service", "KillSignal"); ok && sig != "SIGTERM" && sig != "TERM" && sig != "15" {
		bad("KillSignal=%s: the server drains on SIGTERM", sig)
	}
	if stop, ok := u.last("Service", "TimeoutStopSec"); !ok {
		bad("TimeoutStopSec unset: systemd's default (90s) is not tied to SHUTDOWN_GRACE")
	} else if d, err := parseSpan(stop); err != nil {
		bad("TimeoutStopSec: %v", err)
	} else if d <= cfg.HTTP.ShutdownGrace {
		bad("TimeoutStopSec=%s is not longer than SHUTDOWN_GRACE (%s)", stop, cfg.HTTP.ShutdownGrace)
	}

	// Who runs it.
	dynamic, _ := u.last("Service", "DynamicUser")
	user, hasUser := u.last("Service", "User")
	switch {
	case hasUser && (user == "root" || user == "0"):
		bad("User=%s: the server must not run as root", user)
	case !hasUser && dynamic != "yes":
		bad("neither User= nor DynamicUser=yes: the server would run as root")
	}

	want("ProtectSystem", "strict")
	want("ProtectHome", "yes")
	want("PrivateTmp", "yes")
	want("NoNewPrivileges", "yes")
	want("MemoryDenyWriteExecute", "yes")
	want("LockPersonality", "yes")
	want("SystemCallFilter", "~@privileged")
	if !slices.Contains(u["Service"]["SystemCallFilter"], "@system-service") {
		bad("SystemCallFilter lacks @system-service")
	}
	if caps, ok := u.last("Service", "CapabilityBoundingSet"); !ok || caps != "" {
		bad("CapabilityBoundingSet=%q, want it present and empty", caps)
	}
	if fams, _ := u.last("Service", "RestrictAddressFamilies"); !sameSet(strings.Fields(fams), []string{"AF_INET", "AF_INET6", "AF_UNIX"}) {
		bad("RestrictAddressFamilies=%q, want AF_INET AF_INET6 AF_UNIX", fams)
	}
	want("EnvironmentFile", "/etc/wsserver/wsserver.env")
	want("Restart", "on-failure")
	if _, ok := u.last("Unit", "StartLimitBurst"); !ok {
		bad("StartLimitBurst unset: restarts are not limited")
	}

	// Sockets: the per-instance connection cap needs as many descriptors, and more.
	if n, ok := u.last("Service", "LimitNOFILE"); !ok {
		bad("LimitNOFILE unset")
	} else if v, err := strconv.Atoi(n); err != nil || v <= cfg.HTTP.MaxConnections {
		bad("LimitNOFILE=%s is not above MAX_CONNECTIONS (%d)", n, cfg.HTTP.MaxConnections)
	}
	return problems
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func TestUnit(t *testing.T) {
	cfg := defaults(t)
	assert.Empty(t, checkUnit(read(t, unitPath), cfg))
}

func TestUnitChecksCatch(t *testing.T) {
	cfg := defaults(t)
	text := read(t, unitPath)
	for _, m := range []mutation{
		{"stop timeout equal to the grace", "TimeoutStopSec=40s", "TimeoutStopSec=" + strconv.Itoa(int(cfg.HTTP.ShutdownGrace.Seconds())) + "s"},
		{"no stop timeout", "TimeoutStopSec=40s", ""},
		{"SIGKILL", "KillSignal=SIGTERM", "KillSignal=SIGKILL"},
		{"root", "DynamicUser=yes\nUser=wsserver", "User=root"},
		{"no user", "DynamicUser=yes\nUser=wsserver", ""},
		{"ProtectSystem=full", "\nProtectSystem=strict\n", "\nProtectSystem=full\n"},
		{"a capability", "CapabilityBoundingSet=\n", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"},
		{"netlink", "AF_INET AF_INET6 AF_UNIX", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"},
		{"no syscall filter", "SystemCallFilter=@system-service\n", ""},
		{"few descriptors", "LimitNOFILE=1048576", "LimitNOFILE=4096"},
		{"other env file", "EnvironmentFile=/etc/wsserver/wsserver.env", "EnvironmentFile=-/etc/default/wsserver"},
		{"always restart", "Restart=on-failure", "Restart=always"},
		{"unlimited restarts", "StartLimitBurst=5", ""},
	} {
		t.Run(m.name, func(t *testing.T) {
			assert.NotEmpty(t, checkUnit(m.apply(t, text), cfg))
		})
	}
}

// externalTool returns the path of the validator name, looked up on PATH and then
// at the given paths. When it is missing the test is skipped with a message that
// names the tool, what it would have checked, and where to get it; under .ci/run
// (WSSERVER_CI=1) a tool that .ci/run installs (ciInstalls) must be there, so its
// absence fails the test instead of hiding a check.
func externalTool(t *testing.T, name, checks, source string, ciInstalls bool, paths ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if ciInstalls && os.Getenv("WSSERVER_CI") != "" {
		t.Fatalf("%s is not installed, and .ci/run should have installed it (%s): %s would go unchecked", name, source, checks)
	}
	t.Skipf("SKIPPED CHECK: %s is not installed (%s), so %s is not checked; this package's own rules still run", name, source, checks)
	return ""
}

// systemdAnalyze runs systemd-analyze on a copy of the unit whose ExecStart points
// at this test binary, an executable that exists on every machine.
func systemdAnalyze(t *testing.T, text string, args ...string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	text = regexp.MustCompile(`(?m)^ExecStart=.*$`).ReplaceAllLiteralString(text, "ExecStart="+exe)
	path := filepath.Join(t.TempDir(), "wsserver.service")
	require.NoError(t, os.WriteFile(path, []byte(text), 0o600))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "systemd-analyze", append(args, path)...).CombinedOutput()
	return string(out), err
}

// systemd-analyze verify exits 0 on unknown keys and bad values but prints them, so
// any output is a failure.
func TestUnitVerify(t *testing.T) {
	t.Parallel() // an external tool; no environment changes
	externalTool(t, "systemd-analyze", "the systemd unit (systemd-analyze verify)", "Debian package systemd", true)
	text := read(t, unitPath)
	out, err := systemdAnalyze(t, text, "verify")
	require.NoError(t, err, out)
	assert.Empty(t, strings.TrimSpace(out), "systemd-analyze verify complained")

	t.Run("catches a bad value", func(t *testing.T) {
		out, err := systemdAnalyze(t, mutation{"bad", "\nProtectSystem=strict\n", "\nProtectSystem=bananas\n"}.apply(t, text), "verify")
		assert.True(t, err != nil || strings.TrimSpace(out) != "", "systemd-analyze verify accepted ProtectSystem=bananas")
	})

	t.Run("exposure", func(t *testing.T) {
		help, _ := exec.CommandContext(t.Context(), "systemd-analyze", "security", "--help").CombinedOutput()
		if !bytes.Contains(help, []byte("--offline")) {
			t.Skip("SKIPPED CHECK: this systemd-analyze cannot score a unit file offline (systemd 250 or later can): the unit's exposure is not scored")
		}
		// Scores are tenths: 20 = "2.0", systemd's "OK" band.
		out, err := systemdAnalyze(t, text, "security", "--offline=yes", "--threshold=20")
		assert.NoError(t, err, "exposure above 2.0:\n%s", out)
	})
}
