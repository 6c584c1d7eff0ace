package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// resumeServer is a minimal in-test chat server with resumable answers
// (PROTOCOL.md §3.9), shared by the instances started on it: every chat's
// answer is tokens tokens "t1 ", "t2 ", ... one every pace, made whether
// or not a socket follows it; resume replays what followed seq, then the
// live tokens and end. repeat makes every resume replay seq itself again,
// a broken server.
type resumeServer struct {
	tokens int
	pace   time.Duration
	repeat bool

	upgrader websocket.Upgrader
	mu       sync.Mutex
	answers  map[string]*fakeAnswer // by thread
}

type fakeAnswer struct {
	mu   sync.Mutex
	toks []string
	done bool
}

func (a *fakeAnswer) at(i int) (tok string, ok, done bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i < len(a.toks) {
		return a.toks[i], true, false
	}
	return "", false, a.done
}

func (s *resumeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws := upgrade(w, r, r.URL.Path == "/ws/chat/", "", &s.upgrader)
	if ws == nil {
		return
	}
	defer ws.Close()
	for {
		var m struct {
			Type     string `json:"type"`
			ThreadID string `json:"thread_id"`
			Seq      int    `json:"seq"`
		}
		if err := ws.ReadJSON(&m); err != nil {
			return
		}
		switch m.Type {
		case "chat":
			a := &fakeAnswer{}
			s.mu.Lock()
			s.answers[m.ThreadID] = a
			s.mu.Unlock()
			go func() {
				for i := 1; i <= s.tokens; i++ {
					time.Sleep(s.pace)
					a.mu.Lock()
					a.toks = append(a.toks, "t"+strconv.Itoa(i)+" ")
					a.mu.Unlock()
				}
				a.mu.Lock()
				a.done = true
				a.mu.Unlock()
			}()
			_ = ws.WriteJSON(map[string]any{"type": "session_started", "thread_id": m.ThreadID, "message_id": "m-" + m.ThreadID, "epoch": "e1"})
			s.follow(ws, a, 0)
		case "resume":
			s.mu.Lock()
			a := s.answers[m.ThreadID]
			s.mu.Unlock()
			_ = ws.WriteJSON(map[string]any{"type": "resumed", "thread_id": m.ThreadID, "recovered": true, "state": "streaming"})
			from := m.Seq
			if s.repeat && from > 0 {
				from--
			}
			s.follow(ws, a, from)
		}
	}
}

// follow writes the answer's tokens from index from, then end; it stops
// when a write fails (the client went away).
func (s *resumeServer) follow(ws *websocket.Conn, a *fakeAnswer, from int) {
	for i := from; ; {
		tok, ok, done := a.at(i)
		switch {
		case ok:
			if ws.WriteJSON(map[string]any{"type": "token", "content": tok, "seq": i + 1}) != nil {
				return
			}
			i++
		case done:
			_ = ws.WriteJSON(map[string]any{"type": "end", "seq": i})
			return
		default:
			time.Sleep(time.Millisecond)
		}
	}
}

func TestResumeEndToEnd(t *testing.T) {
	for _, tc := range []struct {
		name   string
		repeat bool
	}{{"whole", false}, {"repeating server", true}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &resumeServer{tokens: 30, pace: 10 * time.Millisecond, repeat: tc.repeat, answers: map[string]*fakeAnswer{}}
			a, b := startResumeServer(t, srv), startResumeServer(t, srv)
			var rep chatReport
			runJSON(t, &rep, "chat", "-url", a+","+b, "-conns", "4", "-chats", "2", "-new-thread", "-resumable",
				"-resume-after", "5", "-resume-away", "100ms", "-resume-live-gap", "5ms")
			rs := rep.Resume
			if rs == nil || rep.Chats.Sent != 8 || rep.Chats.Ended != 8 || rs.Resumes != 8 || rs.NotRecovered != 0 {
				t.Fatalf("chats = %+v, resume = %+v, errors %v: want 8 sent, ended and resumed", rep.Chats, rs, rep.Errors)
			}
			if tc.repeat {
				if rs.SeqErrors != 8 || rs.TextBad != 8 || rep.Errors["resume: token seq repeated or backwards"] != 8 {
					t.Errorf("resume = %+v, errors %v: want every repeat seen", rs, rep.Errors)
				}
				return
			}
			if rs.TextOK != 8 || rs.TextBad != 0 || rs.SeqErrors != 0 || len(rep.Errors) != 0 {
				t.Errorf("resume = %+v, errors %v: want 8 whole answers", rs, rep.Errors)
			}
			// 30 tokens each: 5 before the drop, the rest after the resume.
			if rep.Tokens.Received != 8*30 || rs.CatchUp.Samples != 8 || rs.ToResumed.Samples != 8 {
				t.Errorf("tokens %d, catch-up %+v, resumed %+v: want 240 tokens, 8 samples", rep.Tokens.Received, rs.CatchUp, rs.ToResumed)
			}
		})
	}
}

func startResumeServer(t *testing.T, s *resumeServer) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func TestCatchUp(t *testing.T) {
	ms := time.Millisecond
	c := catchUp{liveGap: 10 * ms}
	c.resume(100 * ms)
	// A burst 1 ms apart after 5 ms, then live tokens 20 ms apart.
	steps := []struct {
		at     time.Duration
		done   bool
		gap    time.Duration
		hasGap bool
	}{
		{105 * ms, false, 0, false}, // the first token ends no burst, however late
		{106 * ms, false, 0, false},
		{107 * ms, false, 0, false},
		{127 * ms, true, 0, false}, // first live token: the burst was 3, last at 107
		{147 * ms, false, 20 * ms, true},
	}
	for i, s := range steps {
		if i == 3 && (c.burst != 3 || c.prev != 107*ms) {
			t.Fatalf("before the live token: burst %d last at %v, want 3 at 107ms", c.burst, c.prev)
		}
		done, gap, hasGap := c.token(s.at)
		if done != s.done || gap != s.gap || hasGap != s.hasGap {
			t.Errorf("token at %v = %v %v %v, want %v %v %v", s.at, done, gap, hasGap, s.done, s.gap, s.hasGap)
		}
	}
}

func TestAwayFor(t *testing.T) {
	ms := time.Millisecond
	cfg := chatConfig{ResumeAway: 1200 * ms}
	if got := awayFor(cfg, 0, 400*ms, 21); got != 1200*ms {
		t.Errorf("-resume-away: %v, want 1.2s", got)
	}
	cfg.ResumeMissed = 60
	if got := awayFor(cfg, 100*ms, 600*ms, 21); got != 1500*ms {
		t.Errorf("60 tokens at 25ms: %v, want 1.5s", got)
	}
	if got := awayFor(cfg, 100*ms, 100*ms, 1); got != 1200*ms {
		t.Errorf("one token, no pace: %v, want -resume-away", got)
	}
}

func TestSeqError(t *testing.T) {
	for _, tc := range []struct {
		last, seq int64
		want      string
	}{
		{0, 1, ""}, {7, 8, ""},
		{7, 7, "resume: token seq repeated or backwards"}, {7, 3, "resume: token seq repeated or backwards"},
		{7, 9, "resume: token seq gap"},
	} {
		if got := seqError(tc.last, tc.seq); got != tc.want {
			t.Errorf("seqError(%d, %d) = %q, want %q", tc.last, tc.seq, got, tc.want)
		}
	}
}

func TestResumeMessages(t *testing.T) {
	head, tail := chatMessage(chatConfig{Message: "m", Channel: "web", Data: "[]", NewThread: true, Resumable: true})
	if got := string(head) + "T" + string(tail); got != `{"type":"chat","message":"m","thread_id":"T","channel":"web","data":[],"resumable":true}` {
		t.Errorf("chat = %s", got)
	}
	var m map[string]any
	if err := json.Unmarshal(resumeMessage("T", "M", "E", 12), &m); err != nil ||
		m["type"] != "resume" || m["thread_id"] != "T" || m["message_id"] != "M" || m["epoch"] != "E" || m["seq"] != 12.0 {
		t.Errorf("resume = %v (%v)", m, err)
	}
}

func TestResumeFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-resume-after", "5", "-new-thread"},
		{"-resume-after", "5", "-resumable"},
		{"-resume-after", "-1"},
		{"-resumable", "-resume-live-gap", "0"},
	} {
		cfg := chatConfig{Conns: 1, Chats: 1, Timeout: time.Second, MaxSamples: 1, ResumeLiveGap: 10 * time.Millisecond}
		for i := 0; i < len(args); i++ {
			switch args[i] {
			case "-resume-after":
				cfg.ResumeAfter, _ = strconv.Atoi(args[i+1])
				i++
			case "-resume-live-gap":
				cfg.ResumeLiveGap = 0
				i++
			case "-new-thread":
				cfg.NewThread = true
			case "-resumable":
				cfg.Resumable = true
			}
		}
		if err := cfg.validate(); err == nil {
			t.Errorf("%v: validated, want an error", args)
		}
	}
}
