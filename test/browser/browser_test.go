// Package browser drives the browser test page (docs/ws_test.html, served
// at /ws-test/) in a real headless Chromium, against a whole wsserver
// instance running in the test process on its in-process adapters.
//
// It needs Debian's chromium package (or CHROME_PATH). Without it the test
// fails; WSSERVER_SKIP_BROWSER=1 skips it, loudly. A full-page screenshot of
// each tab is saved to TEST_ARTIFACTS_DIR (default test/browser/artifacts/).
package browser_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/cmd/wsserver/app"
)

const (
	apiKey = "browser-test-key-0123456789"
	// wait bounds each wait for the page; a passing run never comes close.
	wait = 60 * time.Second
)

// TestWSTestPage opens the test page, chats with streamed tokens and an
// escalation, and joins one session from two tabs that see each other's
// broadcasts and presence.
func TestWSTestPage(t *testing.T) {
	chrome := chromium(t)
	base := startServer(t)
	tabA, tabB := browserTabs(t, chrome)
	a, cancelA := context.WithTimeout(tabA, 4*wait)
	defer cancelA()
	b, cancelB := context.WithTimeout(tabB, 4*wait)
	defer cancelB()

	// The page loads, its inline style and script run under the CSP, and
	// the server URL defaults to the page's own origin.
	open(t, a, base)
	assert.Equal(t, "ws"+strings.TrimPrefix(base, "http"), value(t, a, "server-url"))
	assert.Equal(t, "rgb(245, 246, 248)", eval[string](t, a, `getComputedStyle(document.body).backgroundColor`),
		"the page's style did not apply (its CSP hash?)")

	// Chat: tokens show in the answer as they arrive, then end.
	do(t, a, chromedp.SetValue(chromedp.ID("api-key"), apiKey), chromedp.Click(chromedp.ID("chat-connect")))
	waitFor(t, a, "the chat socket opens", `document.getElementById("chat-status").dataset.state === "open"`)
	do(t, a, chromedp.Evaluate[chromedp.Void](watchAnswer))
	do(t, a,
		chromedp.SetValue(chromedp.ID("chat-message"), "Hello from the browser test, how can you help?"),
		chromedp.Click(chromedp.ID("chat-send")))
	waitFor(t, a, "the first answer ends", `document.getElementById("answer-1").dataset.state !== "waiting" && document.getElementById("answer-1").dataset.state !== "streaming"`)
	require.Equal(t, "done", attr(t, a, "answer-1", "state"), "meta: %s", text(t, a, "answer-1-meta"))
	answer := text(t, a, "answer-1-text")
	require.NotEmpty(t, answer)
	seen := eval[[]growth](t, a, `window.__growth`)
	checkStreamed(t, seen, len([]rune(answer)))
	meta := text(t, a, "answer-1-meta")
	assert.Regexp(t, `^end · usage \d+ in / \d+ out · \d+ tokens`, meta)
	assert.NotEmpty(t, text(t, a, "chat-thread-id"))
	t.Logf("answer (%d changes of the chat log seen): %s", len(seen), answer)

	// Session: two tabs on one session see presence 2 and each other's
	// broadcasts; what they receive is shown as text, never as HTML.
	const room = "browser-room"
	join(t, a, room, "admin")
	waitFor(t, a, "presence 1 in tab A", `document.getElementById("presence-count").textContent === "1"`)
	open(t, b, base)
	do(t, b, chromedp.SetValue(chromedp.ID("api-key"), apiKey))
	join(t, b, room, "agent")
	waitFor(t, b, "presence 2 in tab B", `document.getElementById("presence-count").textContent === "2"`)
	waitFor(t, a, "presence 2 in tab A, live", `document.getElementById("presence-count").textContent === "2"`)
	assert.Contains(t, text(t, a, "presence-list"), "agent/web")

	broadcast(t, b, "hello from B")
	waitFor(t, a, "tab A sees B's broadcast", logHas("hello from B"))
	waitFor(t, b, "tab B sees its own broadcast", logHas("hello from B"))
	broadcast(t, a, "hello from A")
	waitFor(t, b, "tab B sees A's broadcast", logHas("hello from A"))
	const markup = `<img src=x id=injected><b>bold</b>`
	broadcast(t, b, markup)
	waitFor(t, a, "tab A sees the markup as text", logHas(markup))
	assert.True(t, eval[bool](t, a, `document.getElementById("injected") === null && document.querySelector("#session-log b") === null`),
		"a broadcast was inserted as HTML")
	assert.Contains(t, text(t, a, "session-log"), "agent/web")

	// Escalation: shown, then the socket's close with its code and reason.
	do(t, a,
		chromedp.SetValue(chromedp.ID("chat-message"), "Can I talk to a human, please?"),
		chromedp.Click(chromedp.ID("chat-send")))
	waitFor(t, a, "the chat socket closes after the escalation", `document.getElementById("chat-status").dataset.state === "closed"`)
	assert.Equal(t, "closed 1000 escalation", text(t, a, "chat-status"))
	assert.Equal(t, "done", attr(t, a, "answer-2", "state"))
	log := text(t, a, "chat-log")
	assert.Contains(t, log, "escalation: user_requested")
	assert.Contains(t, log, "socket closed 1000 escalation")

	screenshot(t, a, "ws-test-tab-a.png")
	screenshot(t, b, "ws-test-tab-b.png")

	// Presence stays live: B leaves, A counts 1 again.
	do(t, b, chromedp.Click(chromedp.ID("session-disconnect")))
	waitFor(t, b, "tab B shows its close", `document.getElementById("session-status").dataset.state === "closed"`)
	assert.Regexp(t, `^closed 1000 .*\(disconnected here\)$`, text(t, b, "session-status"))
	waitFor(t, a, "presence back to 1 in tab A", `document.getElementById("presence-count").textContent === "1"`)
}

// watchAnswer records, for every change of the chat log, the first answer's
// state and text length: the test then knows what a user saw while it
// streamed. MutationObserver callbacks run after each task, and each
// WebSocket message is a task of its own, so every token is one record.
const watchAnswer = `(() => {
  window.__growth = [];
  new MutationObserver(() => {
    const a = document.getElementById("answer-1");
    if (!a) return;
    window.__growth.push({state: a.dataset.state, len: document.getElementById("answer-1-text").textContent.length});
  }).observe(document.getElementById("chat-log"), {subtree: true, childList: true, characterData: true, attributes: true});
})()`

// growth is one record of watchAnswer.
type growth struct {
	State string `json:"state"`
	Len   int    `json:"len"`
}

// checkStreamed checks that the answer was shown growing, in several
// steps, before it ended at its full length.
func checkStreamed(t *testing.T, seen []growth, final int) {
	t.Helper()
	prev, steps := 0, 0
	for _, g := range seen {
		require.GreaterOrEqual(t, g.Len, prev, "the answer's text shrank: %v", seen)
		if g.State == "streaming" && g.Len > prev {
			steps++
		}
		prev = g.Len
	}
	require.GreaterOrEqual(t, steps, 2, "the answer did not grow while streaming: %v", seen)
	require.NotEmpty(t, seen)
	last := seen[len(seen)-1]
	assert.Equal(t, "done", last.State)
	// JavaScript counts UTF-16 units; the answers of the local model are ASCII.
	assert.Equal(t, final, last.Len)
}

// logHas is a predicate: the session log shows s.
func logHas(s string) string {
	return `document.getElementById("session-log").textContent.includes(` + jsString(s) + `)`
}

func jsString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

func open(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	do(t, ctx, chromedp.Navigate(base+"/ws-test/"), chromedp.WaitVisible(chromedp.ID("chat-connect")))
}

func join(t *testing.T, ctx context.Context, session, userType string) {
	t.Helper()
	do(t, ctx,
		chromedp.SetValue(chromedp.ID("session-id"), session),
		chromedp.SetValue(chromedp.ID("session-user-type"), userType),
		chromedp.Click(chromedp.ID("session-connect")))
	waitFor(t, ctx, "hello_ok on "+session+" as "+userType, `document.getElementById("session-status").dataset.state === "joined"`)
	assert.Contains(t, text(t, ctx, "session-log"), "hello_ok: session "+session)
}

func broadcast(t *testing.T, ctx context.Context, msg string) {
	t.Helper()
	do(t, ctx, chromedp.SetValue(chromedp.ID("session-msg"), msg), chromedp.Click(chromedp.ID("session-send")))
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, steps...))
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(t, err, "%s", js)
	return v
}

func text(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	return eval[string](t, ctx, `document.getElementById(`+jsString(id)+`).textContent`)
}

func value(t *testing.T, ctx context.Context, id string) string {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID(id)))
	require.NoError(t, err, id)
	return v
}

func attr(t *testing.T, ctx context.Context, id, data string) string {
	t.Helper()
	return eval[string](t, ctx, `document.getElementById(`+jsString(id)+`).dataset.`+data+` || ""`)
}

// waitFor waits, at most wait long, until the JavaScript predicate holds.
func waitFor(t *testing.T, ctx context.Context, what, predicate string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(wait)))
	require.NoError(t, err, "waiting until %s (%s)", what, predicate)
}

// screenshot saves a full-page PNG of the tab to the artifacts directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join(artifacts(t), name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
}

// artifacts is TEST_ARTIFACTS_DIR, or test/browser/artifacts/ (ignored by
// git): kept after the test, unlike t.TempDir.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TEST_ARTIFACTS_DIR")
	if dir == "" {
		dir = "artifacts" // go test runs in the package's directory
	}
	dir, err := filepath.Abs(dir)
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// chromium finds the browser: CHROME_PATH, else chromium or
// chromium-browser on PATH.
func chromium(t *testing.T) string {
	t.Helper()
	if os.Getenv("WSSERVER_SKIP_BROWSER") == "1" {
		t.Skip("SKIPPED: WSSERVER_SKIP_BROWSER=1 — the browser test page (docs/ws_test.html) was NOT tested in a browser")
	}
	if p := os.Getenv("CHROME_PATH"); p != "" {
		path, err := exec.LookPath(p)
		require.NoError(t, err, "CHROME_PATH=%s is not an executable", p)
		return path
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Fatal("no Chromium found (chromium or chromium-browser on PATH, or CHROME_PATH): " +
		"install Debian's package with `apt-get install chromium` (.ci/run does), " +
		"or set WSSERVER_SKIP_BROWSER=1 to skip the browser test")
	return ""
}

// browserTabs starts one headless Chromium for the test and returns two
// tabs in it. Failing tests get a screenshot of each tab first.
func browserTabs(t *testing.T, chrome string) (a, b context.Context) {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome),
		// The sandbox needs user namespaces or a setuid helper, which CI
		// containers and root do not have; the page under test is ours.
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	// The first Run starts the browser, which lives as long as the context
	// of that Run: it has no deadline, and each wait has its own.
	a, cancelA := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelA)
	start, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	stop := context.AfterFunc(start, func() { cancelA() })
	defer stop()
	require.NoError(t, chromedp.Do(a), "start %s", chrome)
	b, cancelB := chromedp.NewContext(a)
	t.Cleanup(cancelB)
	require.NoError(t, chromedp.Do(b), "open a second tab")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for name, tab := range map[string]context.Context{"failed-tab-a.png": a, "failed-tab-b.png": b} {
			ctx, cancel := context.WithTimeout(tab, 10*time.Second)
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			cancel()
			if err != nil {
				t.Logf("no failure screenshot %s: %v", name, err)
				continue
			}
			path := filepath.Join(artifacts(t), name)
			if err := os.WriteFile(path, png, 0o644); err == nil {
				t.Logf("failure screenshot: %s", path)
			}
		}
	})
	return a, b
}

// startServer runs one wsserver instance on loopback with the in-process
// adapters, the local model, an API key and the test page, until the test
// ends. It returns its http:// base URL.
func startServer(t *testing.T) string {
	t.Helper()
	t.Setenv("DJANGO_DEBUG", "1") // the development defaults; the key is set below
	cfg, err := config.Load("")
	require.NoError(t, err)
	cfg.InstanceID = "browser"
	cfg.HTTP.Hosts = config.Hosts{Allowed: []string{"127.0.0.1"}}
	cfg.HTTP.TestPageEnabled = true
	cfg.HTTP.ShutdownGrace = 5 * time.Second
	cfg.Auth.APIKey, cfg.Auth.Disabled = apiKey, false
	cfg.Store.RedisURL, cfg.Store.DatabaseURL = "", ""
	cfg.Bedrock = config.Bedrock{}
	// A short pause between tokens, as a real model has.
	cfg.Conversation.LocalTokenDelay = 10 * time.Millisecond

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx, cfg, log, ln) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			assert.NoError(t, err, "the server's shutdown")
		case <-time.After(wait):
			t.Error("the server did not stop")
		}
	})
	return "http://" + ln.Addr().String()
}

// TestWSTestPageMultitask: the page sends "multitask" and shows what comes
// back — a chat that waits is shown queued, then streams; a rolled back
// answer says so.
func TestWSTestPageMultitask(t *testing.T) {
	chrome := chromium(t)
	base := startServer(t)
	tab, _ := browserTabs(t, chrome)
	a, cancel := context.WithTimeout(tab, 4*wait)
	defer cancel()
	open(t, a, base)
	do(t, a, chromedp.SetValue(chromedp.ID("api-key"), apiKey), chromedp.Click(chromedp.ID("chat-connect")))
	waitFor(t, a, "the chat socket opens", `document.getElementById("chat-status").dataset.state === "open"`)
	long := "Tell me " + strings.Repeat("more and more, ", 40)
	send := func(message, multitask string) {
		t.Helper()
		do(t, a,
			chromedp.SetValue(chromedp.ID("chat-multitask"), multitask),
			chromedp.SetValue(chromedp.ID("chat-message"), message),
			chromedp.Click(chromedp.ID("chat-send")))
	}

	send(long, "")
	waitFor(t, a, "the first answer streams", `document.getElementById("answer-1").dataset.state === "streaming"`)
	send("And then?", "enqueue")
	waitFor(t, a, "the second chat is shown queued", `document.getElementById("answer-2-meta").textContent.startsWith("queued: position 1")`)
	waitFor(t, a, "the second answer ends", `document.getElementById("answer-2").dataset.state === "done"`)
	assert.Equal(t, "done", attr(t, a, "answer-1", "state"), "the first answer was not disturbed")

	send(long, "")
	waitFor(t, a, "the third answer streams", `document.getElementById("answer-3").dataset.state === "streaming"`)
	send("No, forget that.", "rollback")
	waitFor(t, a, "the fourth answer ends", `document.getElementById("answer-4").dataset.state === "done"`)
	assert.Equal(t, "cancelled", attr(t, a, "answer-3", "state"))
	assert.Contains(t, text(t, a, "answer-3-meta"), "rolled back")
}

// TestWSTestPageResume: the Resume button drops the chat socket mid-answer,
// connects again and resumes: the answer's bubble ends done, its text the
// whole answer, without a token twice.
func TestWSTestPageResume(t *testing.T) {
	chrome := chromium(t)
	base := startServer(t)
	tab, _ := browserTabs(t, chrome)
	a, cancel := context.WithTimeout(tab, 4*wait)
	defer cancel()
	open(t, a, base)
	do(t, a, chromedp.SetValue(chromedp.ID("api-key"), apiKey), chromedp.Click(chromedp.ID("chat-connect")))
	waitFor(t, a, "the chat socket opens", `document.getElementById("chat-status").dataset.state === "open"`)
	long := "Tell me " + strings.Repeat("more and more, ", 20)
	do(t, a, chromedp.SetValue(chromedp.ID("chat-message"), long), chromedp.Click(chromedp.ID("chat-send")))
	waitFor(t, a, "some tokens arrived", `Number(document.getElementById("answer-1").dataset.tokens) >= 3`)
	do(t, a, chromedp.Click(chromedp.ID("chat-resume")))
	waitFor(t, a, "the resumed answer ends", `document.getElementById("answer-1").dataset.state === "done"`)
	assert.Contains(t, text(t, a, "answer-1-meta"), "resumed")
	got := text(t, a, "answer-1-text")
	assert.True(t, strings.HasPrefix(got, `You asked: "Tell me more and more`), "the answer's start is kept: %q", got)
	assert.True(t, strings.HasSuffix(got, "to talk to a real model."), "the answer ran to its end: %q", got)
	assert.Equal(t, 1, strings.Count(got, "You asked"), "no token twice: %q", got)
	assert.Equal(t, 1, strings.Count(got, "This is the first message"), "no token twice: %q", got)
}
