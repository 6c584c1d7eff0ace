package wstest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sender is a WebSocket server that sends each frame of frames, then
// waits for the client to close.
func sender(t *testing.T, frames ...string) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for _, f := range frames {
			if ws.WriteMessage(websocket.TextMessage, []byte(f)) != nil {
				return
			}
		}
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// recorder is a reporter that keeps what it is told.
type recorder struct{ errs []string }

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

// TestClientValidatesEveryFrame shows that a frame the schema of its
// endpoint refuses is reported, and that a frame it accepts is not: the
// end-to-end suites fail when the server and docs/asyncapi.yaml disagree.
func TestClientValidatesEveryFrame(t *testing.T) {
	tests := []struct {
		name, path, frame string
		bad               bool
	}{
		{"a valid chat token", "/ws/chat/", `{"type":"token","content":"Hi"}`, false},
		{"a chat token with a field too many", "/ws/chat/", `{"type":"token","content":"Hi","seq":1,"extra":true}`, true},
		{"an end without usage", "/ws/chat/?authorization=k", `{"type":"end"}`, true},
		{"a session message on chat", "/ws/chat/", `{"type":"hello_ok","session_id":"s","connection_id":"c"}`, true},
		{"an undocumented error code", "/ws/session/s1/", `{"type":"error","code":"oops","message":"x"}`, true},
		{"a valid presence", "/ws/session/s1/", `{"type":"presence","session_id":"s1","count":0,"connections":[]}`, false},
		{"not JSON", "/ws/session/s1/", `hello`, true},
		{"anything on another path", "/elsewhere/", `hello`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := sender(t, tt.frame)
			c := Dial(t, "ws"+strings.TrimPrefix(srv.URL, "http")+tt.path, nil, 10*time.Second)
			select {
			case <-c.Msgs:
			case <-time.After(10 * time.Second):
				t.Fatal("no message came")
			}
			var r recorder
			c.report(&r)
			if tt.bad {
				require.Len(t, r.errs, 1)
				assert.Contains(t, r.errs[0], "docs/asyncapi.yaml does not allow")
			} else {
				assert.Empty(t, r.errs)
			}
		})
	}
}
