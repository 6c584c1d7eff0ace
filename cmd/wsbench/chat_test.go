package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// chatServer is a minimal in-test implementation of the chat protocol
// (PROTOCOL.md §3): every chat gets session_started, tokens tokens and end. Words in the
// message ask for other replies:
//   - "human": escalation, end, then close 1000 "escalation";
//   - "busy": refused with thread_busy (no session_started);
//   - "break": two tokens, then an internal error instead of the rest;
//   - "crash": one token, then close 1011;
//   - "stall": session_started, then nothing.
type chatServer struct {
	tokens int
	// key, when set, is required as ?authorization=.
	key string
	// sorted writes every message with encoding/json's sorted keys and
	// spaces, as a server other than wsserver might (type is not first).
	sorted bool

	upgrader websocket.Upgrader
	mu       sync.Mutex
	nextID   int
	threads  map[string]int // chats per thread
}

func startChatServer(t *testing.T, s *chatServer) string {
	t.Helper()
	s.mu.Lock()
	s.threads = make(map[string]int)
	s.mu.Unlock()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// chatsByThread returns the number of chats each thread had.
func (s *chatServer) chatsByThread() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.threads)
}

func (s *chatServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws := upgrade(w, r, r.URL.Path == "/ws/chat/", s.key, &s.upgrader)
	if ws == nil {
		return
	}
	defer ws.Close()
	s.mu.Lock()
	s.nextID++
	connID := "c" + strconv.Itoa(s.nextID)
	s.mu.Unlock()

	send := func(fields ...string) { // key, raw JSON value, ...
		var b []byte
		if s.sorted {
			m := make(map[string]json.RawMessage, len(fields)/2)
			for i := 0; i < len(fields); i += 2 {
				m[fields[i]] = json.RawMessage(fields[i+1])
			}
			b, _ = json.MarshalIndent(m, "", " ")
		} else {
			b = append(b, '{')
			for i := 0; i < len(fields); i += 2 {
				if i > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendQuote(b, fields[i])
				b = append(b, ':')
				b = append(b, fields[i+1]...)
			}
			b = append(b, '}')
		}
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = ws.WriteMessage(websocket.TextMessage, b)
	}
	fail := func(code string) { send("type", `"error"`, "code", strconv.Quote(code), "message", `"sorry \"x\""`) }
	closeWith := func(code int, reason string) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	}

	thread := ""
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var in struct {
			Type     string          `json:"type"`
			Message  string          `json:"message"`
			ThreadID string          `json:"thread_id"`
			Channel  string          `json:"channel"`
			Data     json.RawMessage `json:"data"`
		}
		switch {
		case json.Unmarshal(b, &in) != nil:
			fail("invalid_json")
			continue
		case in.Type != "chat":
			fail("unknown_type")
			continue
		case strings.TrimSpace(in.Message) == "":
			fail("invalid_message")
			continue
		case (in.Channel == "" || in.Channel == "web") && (in.Data == nil || string(in.Data) == "null"):
			fail("data_required")
			continue
		case strings.Contains(in.Message, "busy"):
			fail("thread_busy")
			continue
		}
		if in.ThreadID != "" {
			thread = in.ThreadID
		} else if thread == "" {
			s.mu.Lock()
			thread = "t-" + strconv.Itoa(len(s.threads)) + "-" + connID
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.threads[thread]++
		s.mu.Unlock()
		id := strconv.Quote(thread)
		send("type", `"session_started"`, "session_id", id, "thread_id", id, "connection_id", strconv.Quote(connID))
		token := func(i int) { send("type", `"token"`, "content", strconv.Quote("w"+strconv.Itoa(i)+` "q" `)) }
		switch {
		case strings.Contains(in.Message, "human"):
			send("type", `"escalation"`, "should_escalate", "true", "reason", `"user_requested"`)
			send("type", `"end"`, "cancelled", "false")
			closeWith(websocket.CloseNormalClosure, "escalation")
			return
		case strings.Contains(in.Message, "break"):
			token(0)
			token(1)
			fail("internal")
			continue
		case strings.Contains(in.Message, "crash"):
			token(0)
			closeWith(websocket.CloseInternalServerErr, "boom")
			return
		case strings.Contains(in.Message, "stall"):
			continue
		}
		for i := range s.tokens {
			token(i)
		}
		send("type", `"end"`, "message_id", `"m1"`, "usage", `{"input_tokens":3,"output_tokens":4}`, "cancelled", "false")
	}
}

// The assertions below are on counts only: every chat runs to its end (or
// -timeout), so a slow machine makes the tests slower, not flaky.

func TestChatEndToEnd(t *testing.T) {
	tests := []struct {
		name   string
		sorted bool
		args   []string
		// threads is the number of threads the server saw; each had
		// chats/threads chats.
		threads int
	}{
		{"threads continue", false, nil, 4},
		{"a new thread per chat", false, []string{"-new-thread", "-prefix", "bench-"}, 20},
		{"keys sorted, with spaces", true, nil, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Two "instances": connections alternate between them.
			srv := &chatServer{tokens: 7, key: "k3y", sorted: tt.sorted}
			pid := strconv.Itoa(os.Getpid())
			urls := startChatServer(t, srv) + "," + startChatServer(t, srv)
			var rep chatReport
			runJSON(t, &rep, append([]string{"chat", "-url", urls, "-key", "k3y", "-pid", pid + "," + pid,
				"-conns", "4", "-chats", "5", "-timeout", "30s"}, tt.args...)...)

			c := rep.Chats
			if rep.Connect.Connected != 4 || c.Sent != 20 || c.Started != 20 || c.Ended != 20 {
				t.Fatalf("connect = %+v, chats = %+v; want 4 connected, 20 sent, started and ended", rep.Connect, c)
			}
			if c.Failed+c.TimedOut+c.Lost+c.Abandoned+c.Escalated+c.Reconnects != 0 {
				t.Errorf("chats = %+v, want no failure, escalation or reconnect", c)
			}
			if rep.Tokens.Received != 140 || rep.Tokens.PerChat.Min != 7 || rep.Tokens.PerChat.Max != 7 || rep.Tokens.PerChat.Samples != 20 {
				t.Errorf("tokens = %+v, want 140, 7 per chat", rep.Tokens)
			}
			for name, l := range map[string]latencySummary{"started": rep.ToStarted, "first": rep.ToFirst, "added": rep.FirstAdded, "total": rep.Total} {
				if l.Samples != 20 {
					t.Errorf("%s: %d samples, want 20", name, l.Samples)
				}
			}
			if rep.Gap.Samples != 20*6 || rep.Sampled {
				t.Errorf("gap: %d samples (sampled %v), want 120, all kept", rep.Gap.Samples, rep.Sampled)
			}
			if len(rep.Errors) != 0 || len(rep.Escalations) != 0 || rep.Unexpected != 0 {
				t.Errorf("errors = %v, escalations = %v, unexpected = %d; want none", rep.Errors, rep.Escalations, rep.Unexpected)
			}
			if len(rep.Servers) != 2 || rep.Servers[0].Sockets != 2 || rep.Servers[1].Sockets != 2 || rep.Servers[0].Before <= 0 {
				t.Errorf("servers = %+v, want two with RSS and 2 sockets each", rep.Servers)
			}
			threads := srv.chatsByThread()
			if len(threads) != tt.threads {
				t.Errorf("the server saw %d threads, want %d: %v", len(threads), tt.threads, threads)
			}
			for id, n := range threads {
				if n != 20/tt.threads {
					t.Errorf("thread %s had %d chats, want %d", id, n, 20/tt.threads)
				}
				if tt.threads == 20 && !strings.HasPrefix(id, "bench-") {
					t.Errorf("thread %s lacks the -prefix", id)
				}
			}
		})
	}
}

func TestChatErrorsAndEscalations(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    chatCounts
		tokens  int64
		errors  map[string]int
		escalns map[string]int
	}{
		{
			name: "escalation closes the socket; the slot opens another",
			args: []string{"-message", "a human please"},
			// No socket is opened again after the last chat.
			want:    chatCounts{Sent: 6, Started: 6, Ended: 6, Escalated: 6, EscalationCloses: 6, Reconnects: 4},
			escalns: map[string]int{"user_requested": 6},
		},
		{
			name:   "refused chats",
			args:   []string{"-message", "busy?"},
			want:   chatCounts{Sent: 6, Failed: 6},
			errors: map[string]int{"error thread_busy": 6},
		},
		{
			name:   "an error instead of the rest of the answer",
			args:   []string{"-message", "break it"},
			want:   chatCounts{Sent: 6, Started: 6, Failed: 6},
			tokens: 12,
			errors: map[string]int{"error internal": 6},
		},
		{
			name:   "no data on channel web",
			args:   []string{"-data", ""},
			want:   chatCounts{Sent: 6, Failed: 6},
			errors: map[string]int{"error data_required": 6},
		},
		{
			name:   "socket closed mid-answer",
			args:   []string{"-message", "crash"},
			want:   chatCounts{Sent: 2, Started: 2, Lost: 2},
			tokens: 2,
			errors: map[string]int{`read: close 1011 internal error "boom"`: 2},
		},
		{
			name:   "no end",
			args:   []string{"-message", "stall", "-timeout", "100ms"},
			want:   chatCounts{Sent: 2, Started: 2, TimedOut: 2},
			errors: map[string]int{"chat: no end or error within -timeout": 2},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startChatServer(t, &chatServer{tokens: 3})
			var rep chatReport
			runJSON(t, &rep, append([]string{"chat", "-url", url, "-conns", "2", "-chats", "3"}, tt.args...)...)
			got := rep.Chats
			got.Seconds, got.PerSecond = 0, 0
			if got != tt.want {
				t.Errorf("chats = %+v\nwant    %+v", got, tt.want)
			}
			if rep.Tokens.Received != tt.tokens {
				t.Errorf("tokens = %d, want %d", rep.Tokens.Received, tt.tokens)
			}
			if !sameCounts(rep.Errors, tt.errors) {
				t.Errorf("errors = %v, want %v", rep.Errors, tt.errors)
			}
			if !sameCounts(rep.Escalations, tt.escalns) {
				t.Errorf("escalations = %v, want %v", rep.Escalations, tt.escalns)
			}
		})
	}
}

func sameCounts(got, want map[string]int) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestChatWrongKey(t *testing.T) {
	url := startChatServer(t, &chatServer{key: "right"})
	var rep chatReport
	runJSON(t, &rep, "chat", "-url", url, "-key", "wrong", "-conns", "3")
	if rep.Connect.Failed != 3 || rep.Chats.Sent != 0 || rep.Errors["dial: http 401 Unauthorized"] != 3 {
		t.Errorf("connect = %+v, chats = %+v, errors = %v; want 3 refused with 401", rep.Connect, rep.Chats, rep.Errors)
	}
}

func TestChatDuration(t *testing.T) {
	url := startChatServer(t, &chatServer{tokens: 5})
	// -duration without -chats: no limit on chats.
	out := runJSONRaw(t, "chat", "-url", url, "-conns", "2", "-duration", "200ms")
	var rep chatReport
	// The config is written with its report names, which chatConfig does
	// not decode: read the one that matters by its name.
	var written struct {
		Config struct {
			ChatsPerConn *int `json:"chats_per_conn"`
		} `json:"config"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &written); err != nil {
		t.Fatal(err)
	}
	c := rep.Chats
	if n := written.Config.ChatsPerConn; n == nil || *n != 0 {
		t.Fatalf("config chats_per_conn = %v; want 0 (no limit)\n%s", n, out)
	}
	if c.Ended == 0 || c.Sent != c.Ended || c.Started != c.Ended {
		t.Fatalf("chats = %+v; want chats sent until the end, all ended", c)
	}
	if rep.Tokens.Received != 5*c.Ended || len(rep.Errors) != 0 {
		t.Errorf("tokens = %d, errors = %v; want %d, none", rep.Tokens.Received, rep.Errors, 5*c.Ended)
	}
}

func TestChatSampling(t *testing.T) {
	url := startChatServer(t, &chatServer{tokens: 5})
	var rep chatReport
	// 5 samples per measure per connection; 20 chats, 80 gaps.
	runJSON(t, &rep, "chat", "-url", url, "-conns", "2", "-chats", "10", "-max-samples", "10")
	if rep.Chats.Ended != 20 || rep.Tokens.Received != 100 {
		t.Fatalf("chats = %+v, tokens = %+v; want 20 ended, 100 tokens", rep.Chats, rep.Tokens)
	}
	if !rep.Sampled || rep.Gap.Samples != 10 || rep.ToFirst.Samples != 10 || rep.Tokens.PerChat.Samples != 10 {
		t.Errorf("sampled %v, gap %d, first %d, per chat %d samples; want a sample of 10 each",
			rep.Sampled, rep.Gap.Samples, rep.ToFirst.Samples, rep.Tokens.PerChat.Samples)
	}
	if rep.Tokens.PerChat.Min != 5 || rep.Tokens.PerChat.Max != 5 {
		t.Errorf("tokens per chat = %+v, want 5", rep.Tokens.PerChat)
	}
}

func TestChatInterrupted(t *testing.T) {
	url := startChatServer(t, &chatServer{tokens: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"chat", "-url", url, "-conns", "2", "-json"}, &out); err != nil {
		t.Fatal(err)
	}
	var rep chatReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Interrupted || rep.Chats.Sent != 0 {
		t.Errorf("report = %+v, want interrupted with nothing sent", rep)
	}
}

func TestChatHumanOutput(t *testing.T) {
	url := startChatServer(t, &chatServer{tokens: 3})
	for _, msg := range []string{"hello", "human"} {
		var out bytes.Buffer
		args := []string{"chat", "-url", url, "-conns", "2", "-chats", "2", "-message", msg, "-pid", strconv.Itoa(os.Getpid())}
		if err := run(context.Background(), args, &out); err != nil {
			t.Fatalf("run %v: %v", args, err)
		}
		for _, want := range []string{"# ", "connect:", "chats:", "tokens:", "started:", "first tok:", "token gap:",
			"chat total:", "escalation:", "errors:", "server rss:", "wsbench:"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
		if msg == "human" && !strings.Contains(out.String(), "user_requested") {
			t.Errorf("output lacks the escalation reason:\n%s", out.String())
		}
	}
}

func TestParseChat(t *testing.T) {
	tests := []struct {
		in                         string
		kind                       chatKind
		thread, reason, code, text string
	}{
		{in: `{"type":"token","content":"Hel\"lo"}`, kind: chatToken},
		{in: `{"content": "x", "type": "token"}`, kind: chatToken},
		{in: `{"type":"session_started","session_id":"t1","thread_id":"t1","connection_id":"c"}`, kind: chatStarted, thread: "t1"},
		{in: `{"type":"escalation","should_escalate":true,"reason":"guardrail"}`, kind: chatEscalation, reason: "guardrail"},
		{in: `{"type":"end","message_id":"m","usage":{"input_tokens":1,"output_tokens":2},"cancelled":false}`, kind: chatEnd},
		{in: `{"type":"error","code":"thread_busy","message":"wait \"here\""}`, kind: chatError, code: "thread_busy", text: `wait \"here\"`},
		{in: `{ "message" : "no code" , "type" : "error" }`, kind: chatError, text: "no code"},
		{in: `{"type":"pong"}`, kind: chatOther},
		{in: `{"type":"end","code":null}`, kind: chatEnd},
	}
	for _, tt := range tests {
		var m chatMsg
		if err := parseChat([]byte(tt.in), &m); err != nil {
			t.Errorf("parseChat(%s): %v", tt.in, err)
			continue
		}
		if m.kind != tt.kind || string(m.threadID) != tt.thread || string(m.reason) != tt.reason ||
			string(m.code) != tt.code || string(m.text) != tt.text {
			t.Errorf("parseChat(%s) = kind %d thread %q reason %q code %q text %q; want %d %q %q %q %q", tt.in,
				m.kind, m.threadID, m.reason, m.code, m.text, tt.kind, tt.thread, tt.reason, tt.code, tt.text)
		}
	}
	for _, bad := range []string{``, `[]`, `{"type":`, `{"type":"end"`, `{"type":"end"}x`, `{"thread_id":"a}`} {
		var m chatMsg
		if err := parseChat([]byte(bad), &m); err == nil {
			t.Errorf("parseChat(%q) = nil error, want one", bad)
		}
	}
}

func TestReservoir(t *testing.T) {
	r := newReservoir(10, 4)
	for i := range 1000 {
		r.add(int32(i))
	}
	if len(r.s) != 10 || r.n != 1000 {
		t.Fatalf("kept %d of %d, want 10 of 1000", len(r.s), r.n)
	}
	seen := map[int32]bool{}
	late := 0
	for _, v := range r.s {
		if v < 0 || v >= 1000 || seen[v] {
			t.Fatalf("kept %v: not distinct samples of the stream", r.s)
		}
		seen[v] = true
		if v >= 10 {
			late++
		}
	}
	// Each of the first ten survives with probability 1%: all ten
	// surviving (no replacement at all) would mean sampling is broken.
	if late == 0 {
		t.Errorf("kept %v: only the first samples", r.s)
	}
}

func TestChatMessage(t *testing.T) {
	head, tail := chatMessage(chatConfig{Message: `say "hi" <b>`, Channel: "web", Data: "[]"})
	if tail != nil || !json.Valid(head) || string(head) != `{"type":"chat","message":"say \"hi\" \u003cb\u003e","channel":"web","data":[]}` {
		t.Errorf("message = %s (tail %q)", head, tail)
	}
	head, tail = chatMessage(chatConfig{Message: "m", Channel: "sms", NewThread: true})
	if got := string(head) + "p-1-2" + string(tail); got != `{"type":"chat","message":"m","thread_id":"p-1-2","channel":"sms"}` {
		t.Errorf("message = %s", got)
	}
}

func TestStaggerDelay(t *testing.T) {
	tests := []struct {
		name       string
		stagger    time.Duration
		idx, conns int
		want       time.Duration
	}{
		{"off", 0, 3, 10, 0},
		{"negative is off", -time.Second, 3, 10, 0},
		{"one connection starts at once", 2 * time.Second, 0, 1, 0},
		{"first connection starts at once", 2 * time.Second, 0, 4, 0},
		{"second of four", 2 * time.Second, 1, 4, 500 * time.Millisecond},
		{"last of four stays inside the window", 2 * time.Second, 3, 4, 1500 * time.Millisecond},
		{"250 connections over 2s", 2 * time.Second, 125, 250, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := staggerDelay(tt.stagger, tt.idx, tt.conns); got != tt.want {
				t.Errorf("staggerDelay(%v, %d, %d) = %v, want %v", tt.stagger, tt.idx, tt.conns, got, tt.want)
			}
		})
	}
}
