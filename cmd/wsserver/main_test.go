package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestProductionChecksStopStartUp(t *testing.T) {
	t.Setenv("DJANGO_DEBUG", "0")
	err := run(t.Context(), io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DJANGO_SECRET_KEY")
	assert.Contains(t, err.Error(), "AUTH_API_KEY")
}

func TestRunsOnDefaultsAndStopsCleanly(t *testing.T) {
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
	t.Setenv("LISTEN_ADDR", srv.Listener.Addr().String())
	require.NoError(t, healthcheck(t.Context(), time.Second))

	t.Setenv("LISTEN_ADDR", "not-an-address")
	assert.ErrorContains(t, healthcheck(t.Context(), time.Second), "LISTEN_ADDR")
}
