package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/core/logctx"
)

func TestProductionChecksStopStartUp(t *testing.T) {
	t.Setenv("DJANGO_DEBUG", "0")
	err := run(t.Context(), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DJANGO_SECRET_KEY")
	assert.Contains(t, err.Error(), "AUTH_API_KEY")
}

// A setting only Bedrock reads, without Bedrock selected, stops start-up
// with the configuration's other errors, before anything is logged, opened or
// served.
func TestBedrockSettingWithoutBedrockStopsStartUp(t *testing.T) {
	t.Setenv("DJANGO_DEBUG", "1")
	t.Setenv("LISTEN_ADDR", "127.0.0.1:0")
	t.Setenv("BEDROCK_MODEL_ID_SUMMARY", "summary")
	var logs syncBuffer
	err := run(t.Context(), &logs)
	require.Error(t, err)
	assert.Equal(t, "config: BEDROCK_MODEL_ID_SUMMARY: needs AWS_BEDROCK_REGION and BEDROCK_MODEL_ID_CHAT, which select the Bedrock adapters", err.Error())
	assert.Empty(t, logs.String(), "the configuration is refused before the server starts")
}

// TestEmptyEnvironmentExitsNonZero starts the real binary as the image
// does with no settings (docker run wsserver): no environment at all, no
// .env. It must refuse to start, naming everything it lacks.
func TestEmptyEnvironmentExitsNonZero(t *testing.T) {
	goTool, err := exec.LookPath("go") // go test puts its own go first on PATH
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "wsserver")
	build := exec.CommandContext(t.Context(), goTool, "build", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	// A server that starts would serve until killed: the deadline only
	// bounds that failure.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = []string{}  // nothing set, as in a bare docker run
	cmd.Dir = t.TempDir() // and no .env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "the server started with no settings; stderr: %s", stderr.String())
	assert.Equal(t, 1, exit.ExitCode())
	msg := stderr.String()
	for _, want := range []string{
		"wsserver: config: DJANGO_SECRET_KEY: required when DJANGO_DEBUG is off",
		"config: AUTH_API_KEY: required when DJANGO_DEBUG is off",
		"the server does not start without DJANGO_SECRET_KEY and AUTH_API_KEY (or AUTH_DISABLED=1)",
		"DJANGO_DEBUG=1",
	} {
		assert.Contains(t, msg, want)
	}
	assert.NotContains(t, msg, `"msg":"serving"`)
}

func TestRunsOnDefaultsAndStopsCleanly(t *testing.T) {
	t.Setenv("DJANGO_DEBUG", "1") // the development opt-in of make run
	t.Setenv("LISTEN_ADDR", "127.0.0.1:0")
	t.Setenv("AUTH_API_KEY", "a-secret-that-must-not-be-logged")
	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, &logs) }()
	require.Eventually(t, func() bool { return bytes.Contains(logs.Bytes(), []byte(`"msg":"serving"`)) },
		10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
	assert.NotContains(t, logs.String(), "a-secret-that-must-not-be-logged")
	assert.Contains(t, logs.String(), `"msg":"stopped"`)
	// DEBUG on says so, loudly, once.
	assert.Equal(t, 1, strings.Count(logs.String(), `"level":"WARN","msg":"DJANGO_DEBUG is on: THIS SERVER IS OPEN FOR DEVELOPMENT`), logs.String())
}

func TestHealthURL(t *testing.T) {
	tests := []struct {
		addr, want string
	}{
		{":8000", "http://127.0.0.1:8000/health/"},
		{"0.0.0.0:8000", "http://127.0.0.1:8000/health/"},
		{"[::]:8000", "http://127.0.0.1:8000/health/"},
		{"127.0.0.1:9000", "http://127.0.0.1:9000/health/"},
		{"[::1]:8000", "http://[::1]:8000/health/"},
		{"10.0.0.7:8000", "http://10.0.0.7:8000/health/"},
		{"localhost:8000", "http://localhost:8000/health/"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			got, err := healthURL(tt.addr)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	_, err := healthURL("8000")
	assert.ErrorContains(t, err, "LISTEN_ADDR")
}

func TestCheckHealth(t *testing.T) {
	status := func(code int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/health/" {
				http.NotFound(w, r)
				return
			}
			w.WriteHeader(code)
		}
	}
	tests := []struct {
		name    string
		handler http.Handler
		wantErr string // empty: healthy
	}{
		{"serving", status(http.StatusOK), ""},
		{"draining", status(http.StatusServiceUnavailable), "503"},
		{"failing", status(http.StatusInternalServerError), "500"},
		{"redirected", http.RedirectHandler("/elsewhere/", http.StatusFound), "302"},
		{"hung", http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }),
			"deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			t.Cleanup(srv.Close)
			err := checkHealth(t.Context(), srv.URL+"/health/", 200*time.Millisecond)
			if tt.wantErr == "" {
				assert.NoError(t, err)
			} else {
				assert.ErrorContains(t, err, tt.wantErr)
			}
		})
	}
	t.Run("nobody listening", func(t *testing.T) {
		srv := httptest.NewServer(status(http.StatusOK))
		url := srv.URL + "/health/"
		srv.Close()
		assert.ErrorContains(t, checkHealth(t.Context(), url, time.Second), "refused")
	})
}

// TestHealthcheckReadsListenAddr runs the subcommand's whole path: the
// configuration says where to ask.
func TestHealthcheckReadsListenAddr(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(srv.Close)
	t.Setenv("DJANGO_DEBUG", "1") // the settings of the server asked: any that load
	t.Setenv("LISTEN_ADDR", srv.Listener.Addr().String())
	require.NoError(t, healthcheck(t.Context(), time.Second))

	t.Setenv("LISTEN_ADDR", "not-an-address")
	assert.ErrorContains(t, healthcheck(t.Context(), time.Second), "LISTEN_ADDR")
}

// Every line of the process's logger carries the ids of its context, in
// either format.
func TestLoggerAddsTheContextsFields(t *testing.T) {
	ctx := logctx.With(t.Context(), slog.String("connection_id", "c1"), slog.String("thread_id", "t1"))
	for _, tt := range []struct{ format, want string }{
		{"json", `"msg":"m","k":1,"connection_id":"c1","thread_id":"t1"}`},
		{"text", `msg=m k=1 connection_id=c1 thread_id=t1`},
	} {
		t.Run(tt.format, func(t *testing.T) {
			var buf bytes.Buffer
			log := newLogger(config.Log{Level: slog.LevelInfo, Format: tt.format}, &buf)
			log.InfoContext(ctx, "m", "k", 1)
			assert.Contains(t, buf.String(), tt.want)
			log.DebugContext(ctx, "below the level")
			assert.NotContains(t, buf.String(), "below the level")
		})
	}
}
