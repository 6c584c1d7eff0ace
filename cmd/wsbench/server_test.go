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

// sessionServer is a minimal in-test implementation of the session protocol
// (PROTOCOL.md §4): hello (with or without hello_ok), broadcast to every socket of
// the session including the sender, presence, ping. It is just enough to
// test wsbench without the real server.
type sessionServer struct {
	// reference behaves like the Django reference server: no hello_ok, and
	// a bad hello is closed with 4001.
	reference bool
	// refuseHello refuses every hello.
	refuseHello bool
	// key, when set, is required as ?authorization=.
	key string
	// presenceSkew is added to presence counts, to fake an inexact server.
	presenceSkew int

	upgrader websocket.Upgrader
	mu       sync.Mutex
	sessions map[string]map[*testConn]bool
	nextID   int
}

type testConn struct {
	ws                   *websocket.Conn
	id                   string
	userType, clientType *string
	wmu                  sync.Mutex
}

func (c *testConn) send(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_ = c.ws.WriteMessage(websocket.TextMessage, b)
}

// startSessionServer serves s on a new loopback port and returns its ws://
// URL. Serving one s on two ports stands for two instances sharing a
// channel layer.
func startSessionServer(t *testing.T, s *sessionServer) string {
	t.Helper()
	s.mu.Lock()
	if s.sessions == nil {
		s.sessions = make(map[string]map[*testConn]bool)
	}
	s.mu.Unlock()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// upgrade answers 404 unless found (the path is the test server's) and
// 401 unless the request carries key (when one is set) as ?authorization=,
// and upgrades it otherwise. It returns nil when the request got an HTTP
// answer instead.
func upgrade(w http.ResponseWriter, r *http.Request, found bool, key string, u *websocket.Upgrader) *websocket.Conn {
	if !found {
		http.Error(w, "not found", http.StatusNotFound)
		return nil
	}
	if key != "" && r.URL.Query().Get("authorization") != key {
		http.Error(w, `{"error":{"code":"unauthorized"}}`, http.StatusUnauthorized)
		return nil
	}
	ws, err := u.Upgrade(w, r, nil)
	if err != nil {
		return nil
	}
	return ws
}

func (s *sessionServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	session, ok := strings.CutPrefix(r.URL.Path, "/ws/session/")
	session, ok2 := strings.CutSuffix(session, "/")
	ws := upgrade(w, r, ok && ok2 && session != "" && !strings.Contains(session, "/"), s.key, &s.upgrader)
	if ws == nil {
		return
	}
	defer ws.Close()
	c := &testConn{ws: ws}

	var hello struct {
		Type       string  `json:"type"`
		UserType   *string `json:"user_type"`
		ClientType *string `json:"client_type"`
	}
	_, b, err := ws.ReadMessage()
	if err != nil {
		return
	}
	if json.Unmarshal(b, &hello) != nil || hello.Type != "hello" || hello.UserType == nil || s.refuseHello {
		code := websocket.ClosePolicyViolation
		if s.reference {
			code = 4001
			c.send([]byte(`{"type":"error","message":"first message must be hello with user_type"}`))
		} else {
			c.send([]byte(`{"type":"error","code":"hello_required","message":"say hello first"}`))
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return
	}
	c.userType, c.clientType = hello.UserType, hello.ClientType

	s.mu.Lock()
	s.nextID++
	c.id = "c" + strconv.Itoa(s.nextID)
	if s.sessions[session] == nil {
		s.sessions[session] = make(map[*testConn]bool)
	}
	s.sessions[session][c] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions[session], c)
		s.mu.Unlock()
	}()
	if !s.reference {
		ok, _ := json.Marshal(map[string]string{"type": "hello_ok", "session_id": session, "connection_id": c.id})
		c.send(ok)
	}

	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		var in struct {
			Type string          `json:"type"`
			Msg  json.RawMessage `json:"msg"`
			Data json.RawMessage `json:"data"`
		}
		if json.Unmarshal(b, &in) != nil {
			c.send([]byte(`{"type":"error","code":"invalid_json","message":"bad JSON"}`))
			continue
		}
		switch in.Type {
		case "broadcast":
			data := in.Data
			if data == nil {
				data = json.RawMessage("null")
			}
			out, _ := json.Marshal(map[string]any{
				"type": "session_message", "user_type": c.userType, "client_type": c.clientType,
				"msg": in.Msg, "data": data,
			})
			for _, peer := range s.members(session) {
				peer.send(out)
			}
		case "presence":
			members := s.members(session)
			conns := make([]map[string]any, len(members))
			for i, m := range members {
				conns[i] = map[string]any{"connection_id": m.id, "user_type": m.userType, "client_type": m.clientType}
			}
			out, _ := json.Marshal(map[string]any{
				"type": "presence", "session_id": session, "count": len(members) + s.presenceSkew, "connections": conns,
			})
			c.send(out)
		case "ping":
			c.send([]byte(`{"type":"pong"}`))
		default:
			c.send([]byte(`{"type":"error","code":"unknown_type","message":"unknown type"}`))
		}
	}
}

func (s *sessionServer) members(session string) []*testConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*testConn, 0, len(s.sessions[session]))
	for c := range s.sessions[session] {
		out = append(out, c)
	}
	return out
}
