package main

import (
	"bytes"
	"context"
	"io"
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
