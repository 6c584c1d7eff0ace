package deployments

import (
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
	"go.yaml.in/yaml/v3"

	"github.com/wsserver/wsserver/adapters/config"
)

// compose.yaml and the nginx configuration behind it.

// checkCompose: two or more wsserver replicas built from the Dockerfile, wired to the
// stack's Redis and PostgreSQL, stopped no faster than they drain; every ${VAR}
// documented in .env.example.
func checkCompose(text, env string, cfg config.Config) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	var doc struct {
		Version  any                       `yaml:"version"`
		Services map[string]map[string]any `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		return []string{err.Error()}
	}
	if doc.Version != nil {
		bad("a version: key: the Compose Specification has none")
	}
	for _, name := range []string{"redis", "postgres"} {
		if s := doc.Services[name]; s == nil || s["healthcheck"] == nil {
			bad("service %s missing or without a health check", name)
		}
	}
	if pg := doc.Services["postgres"]; pg != nil {
		named := false
		for _, v := range asList(pg["volumes"]) {
			src, _, _ := strings.Cut(fmt.Sprint(v), ":")
			named = named || doc.Volumes != nil && hasKey(doc.Volumes, src)
		}
		if !named {
			bad("postgres keeps its data in no named volume")
		}
	}

	ids := map[string]bool{}
	replicas := 0
	for name, s := range doc.Services {
		build, ok := s["build"].(map[string]any)
		if !ok {
			continue
		}
		replicas++
		args, _ := build["args"].(map[string]any)
		for _, a := range []string{"GO_IMAGE", "RUNTIME_IMAGE"} {
			if args[a] == nil {
				bad("%s: build argument %s is not passed", name, a)
			}
		}
		if s["env_file"] != ".env" && !slices.Contains(asList(s["env_file"]), any(".env")) {
			bad("%s: env_file is not .env", name)
		}
		envs, _ := s["environment"].(map[string]any)
		id := fmt.Sprint(envs["INSTANCE_ID"])
		if envs["INSTANCE_ID"] == nil || ids[id] {
			bad("%s: INSTANCE_ID missing or shared", name)
		}
		ids[id] = true
		if u := fmt.Sprint(envs["REDIS_URL"]); !strings.HasPrefix(u, "redis://redis:") {
			bad("%s: REDIS_URL=%q does not point at the redis service", name, u)
		}
		if u := fmt.Sprint(envs["DATABASE_URL"]); !regexp.MustCompile(`^postgres://[^@]*@postgres:`).MatchString(u) {
			bad("%s: DATABASE_URL does not point at the postgres service", name)
		}
		if a := fmt.Sprint(envs["LISTEN_ADDR"]); !strings.HasPrefix(a, ":") && !strings.HasPrefix(a, "0.0.0.0:") {
			bad("%s: LISTEN_ADDR=%q is not every interface (.env's loopback address would win)", name, a)
		}
		if g, err := time.ParseDuration(fmt.Sprint(s["stop_grace_period"])); err != nil || g <= cfg.HTTP.ShutdownGrace {
			bad("%s: stop_grace_period %v is not longer than SHUTDOWN_GRACE (%s)", name, s["stop_grace_period"], cfg.HTTP.ShutdownGrace)
		}
	}
	if replicas < 2 {
		bad("%d wsserver replicas, want two", replicas)
	}
	if lb := doc.Services["lb"]; lb == nil {
		bad("no lb service")
	} else {
		published := slices.ContainsFunc(asList(lb["ports"]), func(p any) bool {
			return strings.HasSuffix(fmt.Sprint(p), "8000}:80") || strings.HasSuffix(fmt.Sprint(p), ":8000:80")
		})
		if !published {
			bad("lb does not publish port 8000")
		}
		mounted := slices.ContainsFunc(asList(lb["volumes"]), func(v any) bool {
			return strings.HasPrefix(fmt.Sprint(v), "./deployments/"+nginxPath+":")
		})
		if !mounted {
			bad("lb does not mount deployments/%s", nginxPath)
		}
	}

	// Every variable compose interpolates is documented for .env.
	for _, m := range regexp.MustCompile(`\$\{([A-Z_][A-Z0-9_]*)`).FindAllStringSubmatch(text, -1) {
		if !regexp.MustCompile(`(?m)^(# )?` + m[1] + `=`).MatchString(env) {
			bad("${%s} is not documented in .env.example", m[1])
		}
	}
	return problems
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}

// checkNginx: round robin over every replica, WebSocket upgrades passed on, reads
// that outlast idle sockets' pings.
func checkNginx(conf string, replicas []string, cfg config.Config) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, r := range replicas {
		if !regexp.MustCompile(`(?m)^\s*server\s+` + regexp.QuoteMeta(r) + `:8000\b`).MatchString(conf) {
			bad("upstream lacks %s:8000", r)
		}
	}
	if m := regexp.MustCompile(`(?m)^\s*(ip_hash|hash|sticky|least_conn)\b`).FindString(conf); m != "" {
		bad("%q: the replicas need no affinity, and the demo wants round robin", strings.TrimSpace(m))
	}
	for _, d := range []string{
		`proxy_http_version 1.1;`,
		`proxy_set_header Upgrade $http_upgrade;`,
		`proxy_set_header Connection $connection_upgrade;`,
	} {
		if !strings.Contains(conf, d) {
			bad("missing %q", d)
		}
	}
	m := regexp.MustCompile(`(?m)^\s*proxy_read_timeout\s+(\d+)s;`).FindStringSubmatch(conf)
	if m == nil {
		bad("proxy_read_timeout unset (nginx's 60s default is not a choice)")
	} else if n, _ := strconv.Atoi(m[1]); time.Duration(n)*time.Second <= 2*cfg.WebSocket.PingInterval {
		bad("proxy_read_timeout %ss is not above two ping intervals (2 x %s)", m[1], cfg.WebSocket.PingInterval)
	}
	return problems
}

// replicas lists the compose services that build wsserver.
func replicas(t *testing.T, composeText string) []string {
	t.Helper()
	var doc struct {
		Services map[string]map[string]any `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(composeText), &doc))
	var out []string
	for name, s := range doc.Services {
		if s["build"] != nil {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func TestCompose(t *testing.T) {
	cfg := defaults(t)
	text := read(t, composePath)
	assert.Empty(t, checkCompose(text, read(t, envExample), cfg))
	rs := replicas(t, text)
	assert.Equal(t, []string{"wsserver-1", "wsserver-2"}, rs)
	assert.Empty(t, checkNginx(read(t, nginxPath), rs, cfg))
}

func TestComposeChecksCatch(t *testing.T) {
	cfg := defaults(t)
	text, env := read(t, composePath), read(t, envExample)
	for _, m := range []mutation{
		{"version key", "x-wsserver: &wsserver", "version: \"3.8\"\nx-wsserver: &wsserver"},
		{"one replica", "  wsserver-2:\n    <<: *wsserver\n", "  wsserver-2:\n    image: wsserver\n"},
		{"same instance id", "INSTANCE_ID: wsserver-2", "INSTANCE_ID: wsserver-1"},
		{"short stop", "stop_grace_period: 35s", "stop_grace_period: 10s"},
		{"loopback listener", `LISTEN_ADDR: ":8000"`, `LISTEN_ADDR: "127.0.0.1:8000"`},
		{"redis elsewhere", "REDIS_URL: redis://redis:6379/0", "REDIS_URL: redis://127.0.0.1:6379/0"},
		{"no runtime arg", "      RUNTIME_IMAGE: ${RUNTIME_IMAGE:-scratch}\n", ""},
		{"anonymous pg volume", "- pgdata:/var/lib/postgresql/data", "- /var/lib/postgresql/data"},
		{"undocumented variable", "${LB_IMAGE:-nginx:1.27-alpine}", "${NGINX_IMAGE:-nginx:1.27-alpine}"},
		{"no postgres health check", "    healthcheck:\n      test: [\"CMD\", \"pg_isready\", \"-U\", \"wsserver\", \"-d\", \"wsserver\"]\n", "    x-healthcheck:\n      test: [\"CMD\", \"pg_isready\"]\n"},
	} {
		t.Run(m.name, func(t *testing.T) {
			assert.NotEmpty(t, checkCompose(m.apply(t, text), env, cfg))
		})
	}

	conf := read(t, nginxPath)
	rs := replicas(t, text)
	for _, m := range []mutation{
		{"one upstream", "    server wsserver-2:8000 max_fails=1 fail_timeout=10s;\n", ""},
		{"sticky", "upstream wsserver {\n", "upstream wsserver {\n    ip_hash;\n"},
		{"no upgrade", "proxy_set_header Upgrade $http_upgrade;", ""},
		{"short read timeout", "proxy_read_timeout 60s;", "proxy_read_timeout 30s;"},
	} {
		t.Run("nginx "+m.name, func(t *testing.T) {
			assert.NotEmpty(t, checkNginx(m.apply(t, conf), rs, cfg))
		})
	}
}

// composeTree copies what `compose config` reads into a temporary project: the
// compose file, the nginx configuration, and .env.example as .env.
func composeTree(t *testing.T, composeText string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "deployments", "compose"), 0o755))
	for path, data := range map[string]string{
		"compose.yaml":                          composeText,
		".env":                                  read(t, envExample),
		filepath.Join("deployments", nginxPath): read(t, nginxPath),
	} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, path), []byte(data), 0o600))
	}
	return dir
}

// TestComposeConfig runs each installed compose's own validation.
func TestComposeConfig(t *testing.T) {
	t.Parallel() // an external tool; no environment changes
	type tool struct {
		name string
		argv []string
	}
	var tools []tool
	if _, err := exec.LookPath("docker-compose"); err == nil {
		tools = append(tools, tool{"docker-compose", []string{"docker-compose"}})
	}
	if _, err := exec.LookPath("docker"); err == nil &&
		exec.CommandContext(t.Context(), "docker", "compose", "version").Run() == nil {
		tools = append(tools, tool{"docker compose", []string{"docker", "compose"}})
	}
	if len(tools) == 0 {
		externalTool(t, "docker-compose", "compose.yaml (docker-compose config; docker compose would do too)", "Debian package docker-compose", true)
	}
	text := read(t, composePath)
	for _, tl := range tools {
		t.Run(tl.name, func(t *testing.T) {
			run := func(text string) (string, error) {
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				defer cancel()
				argv := append(slices.Clone(tl.argv), "config", "-q")
				cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
				cmd.Dir = composeTree(t, text)
				// The project's own files decide, not the caller's shell.
				cmd.Env = cleanEnv(read(t, envExample))
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			out, err := run(text)
			require.NoError(t, err, "%s config:\n%s", tl.name, out)
			assert.Empty(t, strings.TrimSpace(out), "%s config printed warnings", tl.name)

			out, err = run(mutation{"bad key", "    restart: unless-stopped\n", "    restart: unless-stopped\n    restarts: 3\n"}.apply(t, text))
			assert.Error(t, err, "%s config accepted an unknown key:\n%s", tl.name, out)
		})
	}
}

// cleanEnv is the process environment without the variables .env.example names,
// which would otherwise override the project's .env.
func cleanEnv(env string) []string {
	names := map[string]bool{}
	for _, m := range envLine.FindAllStringSubmatch(env, -1) {
		names[m[1]] = true
	}
	var out []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !names[k] {
			out = append(out, kv)
		}
	}
	return out
}

// TestNginxSyntax runs nginx -t on the configuration with the replicas' names
// pointed at loopback (nginx resolves upstream names while checking).
func TestNginxSyntax(t *testing.T) {
	t.Parallel() // an external tool; no environment changes
	nginx := externalTool(t, "nginx", "the nginx configuration (nginx -t)", "Debian package nginx", true,
		"/usr/sbin/nginx", "/usr/local/sbin/nginx")
	conf := read(t, nginxPath)
	for _, r := range replicas(t, read(t, composePath)) {
		conf = strings.ReplaceAll(conf, "server "+r+":", "server 127.0.0.1:")
	}
	out, err := nginxTest(t, nginx, conf)
	require.NoError(t, err, "nginx -t:\n%s", out)

	t.Run("catches a typo", func(t *testing.T) {
		out, err := nginxTest(t, nginx, mutation{"typo", "proxy_buffering off;", "proxy_bufering off;"}.apply(t, conf))
		assert.Error(t, err, "nginx -t accepted an unknown directive:\n%s", out)
	})
}

// nginxTest runs nginx -t on conf as the http block's only server, with every
// path nginx writes to inside a temporary directory.
func nginxTest(t *testing.T, nginx, conf string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "default.conf"), []byte(conf), 0o600))
	var temps strings.Builder
	for _, kind := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&temps, "    %s_temp_path %s/%s;\n", kind, dir, kind)
	}
	main := fmt.Sprintf("pid %[1]s/nginx.pid;\nerror_log %[1]s/error.log;\nevents {}\nhttp {\n    access_log off;\n%[2]s    include %[1]s/default.conf;\n}\n", dir, temps.String())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o600))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, nginx, "-t", "-q", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf")).CombinedOutput()
	return string(out), err
}
