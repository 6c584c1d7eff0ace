// Package fakemodeltest holds the checks every fake model endpoint and
// its command run on their use of package fakemodel, so that each fake
// runs them once, in its own wire format.
package fakemodeltest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/internal/fakemodel"
)

// Stream writes a script of deltas, paced pace apart, to w as a fake
// streams it, and reports whether the client went away first. It runs in
// a synctest bubble: the fake it uses must be made there, with no HTTP
// server (fakemodel.New with a nil handler).
type Stream func(ctx context.Context, w http.ResponseWriter, deltas []string, pace time.Duration) (gone bool)

// slowWriter records when each delta is written, and takes late (virtual)
// time to write the delta that contains lateAfter.
type slowWriter struct {
	*httptest.ResponseRecorder
	isDelta   func(p string) bool
	lateAfter string
	late      time.Duration
	at        []time.Time
}

func (w *slowWriter) Write(p []byte) (int, error) {
	if s := string(p); w.isDelta(s) {
		w.at = append(w.at, time.Now())
		if strings.Contains(s, w.lateAfter) {
			time.Sleep(w.late)
		}
	}
	return w.ResponseRecorder.Write(p)
}

func (w *slowWriter) WriteString(s string) (int, error) { return w.Write([]byte(s)) }

func (w *slowWriter) Flush() { w.ResponseRecorder.Flush() }

// CheckPace checks that stream keeps the model's clock: a delta sent late
// does not delay the ones after it, as a model generating at a steady
// rate would not. isDelta tells a write of a delta from the others.
func CheckPace(t *testing.T, stream Stream, isDelta func(p string) bool) {
	t.Helper()
	synctest.Test(t, func(t *testing.T) {
		const pace = 20 * time.Millisecond
		w := &slowWriter{ResponseRecorder: httptest.NewRecorder(), isDelta: isDelta, lateAfter: `"b"`, late: 33 * time.Millisecond}
		start := time.Now()
		gone := stream(context.Background(), w, []string{"a", "b", "c", "d", "e"}, pace)
		require.False(t, gone)
		assert.Equal(t, http.StatusOK, w.Code)

		want := []time.Time{
			start,
			start.Add(pace),
			start.Add(pace + 33*time.Millisecond), // due at 40 ms, late
			start.Add(3 * pace),
			start.Add(4 * pace),
		}
		assert.Equal(t, want, w.at)
	})
}

// Parse is a command's parse of its args, giving the common flags.
type Parse func(args []string, usage io.Writer) (fakemodel.Flags, error)

// CheckParse runs the cases of the common flags on a command's parse.
func CheckParse(t *testing.T, parse Parse) {
	t.Helper()
	tests := []struct {
		name    string
		args    []string
		want    fakemodel.Flags
		wantErr string
	}{
		{name: "defaults", want: fakemodel.Flags{Text: fakemodel.DefaultText, Pace: 20 * time.Millisecond}},
		{
			name: "common flags",
			args: []string{"-text", "Hi there.", "-words", "5", "-pace", "5ms", "-url-file", "/tmp/u"},
			want: fakemodel.Flags{Text: "Hi there.", Words: 5, Pace: 5 * time.Millisecond, URLFile: "/tmp/u"},
		},
		{name: "no pace", args: []string{"-pace", "0"}, want: fakemodel.Flags{Text: fakemodel.DefaultText}},
		{name: "negative words", args: []string{"-words", "-1"}, wantErr: "-words"},
		{name: "negative pace", args: []string{"-pace", "-1ms"}, wantErr: "-pace"},
		{name: "blank text", args: []string{"-text", "  "}, wantErr: "-text"},
		{name: "stray argument", args: []string{"20ms"}, wantErr: "unexpected"},
		{name: "unknown flag", args: []string{"-addr", ":80"}, wantErr: "-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parse(tt.args, io.Discard)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

// Run is a command's run: it serves until ctx ends.
type Run func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// CheckRun runs a command that answers "Hello there, world." cut or
// repeated to four words, and checks that it announces its URL on stdout
// and in its -url-file, that call (one call to the fake at url, in its
// wire format) gets the answer, and that the command ends on cancel,
// having counted the call.
func CheckRun(t *testing.T, run Run, call func(t *testing.T, ctx context.Context, url string)) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	urlFile := filepath.Join(t.TempDir(), "url")
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-text", "Hello there, world.", "-words", "4", "-pace", "0", "-url-file", urlFile}, &stdout, &stderr)
	}()

	var url string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(urlFile) //nolint:gosec // the test's own temporary file
		url = strings.TrimSpace(string(b))
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"), url)

	call(t, ctx, url)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("run did not end on cancel")
	}
	assert.Equal(t, url+"\n", stdout.String())
	assert.Contains(t, stderr.String(), "calls=1")
}

// Post posts body to url and returns the answer, which must be 200 OK;
// the caller closes its body.
func Post(t *testing.T, ctx context.Context, url, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return resp
}
