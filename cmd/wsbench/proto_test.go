package main

import (
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want message // code and text compared as strings below
		code string
		text string
	}{
		{
			name: "wsserver session_message",
			in:   `{"type":"session_message","user_type":"bench","client_type":"wsbench","msg":"b","data":{"t":1732680000123456789,"p":3,"s":41}}`,
			want: message{kind: kindSessionMessage, has: hasT | hasP | hasS, t: 1732680000123456789, p: 3, s: 41},
		},
		{
			name: "reference server spacing",
			in:   `{"type": "session_message", "user_type": "bench", "client_type": "wsbench", "msg": "b", "data": {"t": 5, "p": 0, "s": -2}}`,
			want: message{kind: kindSessionMessage, has: hasT | hasP | hasS, t: 5, p: 0, s: -2},
		},
		{
			name: "keys in any order, sorted data, newlines",
			in:   "{\n\"data\":{\"p\":7,\"s\":0,\"t\":9},\n\"msg\":{\"nested\":[1,{\"x\":\"}]\"}]},\"type\":\"session_message\"}",
			want: message{kind: kindSessionMessage, has: hasT | hasP | hasS, t: 9, p: 7, s: 0},
		},
		{
			name: "data null",
			in:   `{"type":"session_message","user_type":"admin","client_type":null,"msg":"hello","data":null}`,
			want: message{kind: kindSessionMessage},
		},
		{
			name: "foreign data keeps what fits",
			in:   `{"type":"session_message","msg":"x","data":{"t":"soon","p":1,"other":[true],"s":3}}`,
			want: message{kind: kindSessionMessage, has: hasP | hasS, p: 1, s: 3},
		},
		{
			name: "hello_ok",
			in:   `{"type":"hello_ok","session_id":"s-1","connection_id":"c-9"}`,
			want: message{kind: kindHelloOK},
		},
		{
			name: "presence",
			in:   `{"type":"presence","session_id":"s","count":3,"connections":[{"connection_id":"a","user_type":"x\"]","client_type":null},{"connection_id":"b"},{}]}`,
			want: message{kind: kindPresence, has: hasCount | hasConnections, count: 3, connections: 3},
		},
		{
			name: "presence empty",
			in:   `{"type": "presence", "session_id": "s", "count": 0, "connections": []}`,
			want: message{kind: kindPresence, has: hasCount | hasConnections},
		},
		{
			name: "error with code",
			in:   `{"type":"error","code":"rate_limited","message":"slow down"}`,
			want: message{kind: kindError},
			code: "rate_limited",
			text: "slow down",
		},
		{
			name: "reference error with escapes",
			in:   `{"type": "error", "message": "unknown type: \"x\""}`,
			want: message{kind: kindError},
			text: `unknown type: \"x\"`,
		},
		{name: "pong", in: `{"type":"pong"}`, want: message{kind: kindPong}},
		{name: "unknown type", in: `{"type":"chat_event","event":{"kind":"answer"}}`, want: message{kind: kindOther}},
		{name: "empty object", in: `{}`, want: message{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m message
			err := parseMessage([]byte(tt.in), &m)
			if err != nil {
				t.Fatalf("parse %s: %v", tt.in, err)
			}
			if string(m.code) != tt.code || string(m.text) != tt.text {
				t.Errorf("code, text = %q, %q; want %q, %q", m.code, m.text, tt.code, tt.text)
			}
			m.code, m.text = nil, nil
			if !reflect.DeepEqual(m, tt.want) {
				t.Errorf("parse %s\n got %+v\nwant %+v", tt.in, m, tt.want)
			}
		})
	}
}

func TestParseMessageErrors(t *testing.T) {
	for _, in := range []string{
		``,
		`[]`,
		`"type"`,
		`{"type":"session_message"`,
		`{"type":"session_message",}`,
		`{"type":session_message}`,
		`{"type":"x"} trailing`,
		`{"type":"session_message","data":{"t":1.5,"p":1,"s":1}}`,
		`{"type":"session_message","data":{"t":1e9,"p":1,"s":1}}`,
		`{"type":"session_message","data":{"t":1,"p":1.5e0,"s":1}}`,
		`{"type":"session_message","data":{"t":99999999999999999999,"p":1,"s":1}}`,
		`{"type":"presence","count":"3","connections":[]}`,
		`{"type":"presence","count":3,"connections":[1,2`,
		`{"type":"error","message":"unterminated}`,
	} {
		var m message
		if err := parseMessage([]byte(in), &m); err == nil {
			t.Errorf("parse %q: want an error, got %+v", in, m)
		}
	}
}

func TestNumberLimits(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"-0", 0, true},
		{"9223372036854775807", math.MaxInt64, true},
		{"-9223372036854775808", math.MinInt64, true},
		{"9223372036854775808", 0, false},
		{"-9223372036854775809", 0, false},
		{"-", 0, false},
		{"1.0", 0, false},
	}
	for _, tt := range tests {
		s := scanner{b: []byte(tt.in)}
		var v int64
		ok := s.number(&v)
		if ok != tt.ok || (ok && v != tt.want) {
			t.Errorf("number(%q) = %d, %v; want %d, %v", tt.in, v, ok, tt.want, tt.ok)
		}
	}
}

func TestAppendBroadcast(t *testing.T) {
	b := appendBroadcast(nil, 1732680000123456789, 12, -3)
	var got struct {
		Type string `json:"type"`
		Msg  string `json:"msg"`
		Data struct {
			T int64 `json:"t"`
			P int   `json:"p"`
			S int64 `json:"s"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if got.Type != "broadcast" || got.Msg != "b" || got.Data.T != 1732680000123456789 || got.Data.P != 12 || got.Data.S != -3 {
		t.Errorf("broadcast = %s", b)
	}
	// What the server echoes parses back to the same numbers.
	echo := strings.Replace(string(b), `"type":"broadcast"`, `"type":"session_message","user_type":"bench","client_type":"wsbench"`, 1)
	var m message
	if err := parseMessage([]byte(echo), &m); err != nil || !m.benchData() || m.t != got.Data.T || m.p != 12 || m.s != -3 {
		t.Errorf("parse echo %s = %+v, %v", echo, m, err)
	}
	if err := json.Unmarshal([]byte(helloMsg), new(map[string]any)); err != nil {
		t.Errorf("hello: %v", err)
	}
}

func TestJSONString(t *testing.T) {
	if got := jsonString([]byte(`a \"b\" \u00e9`)); got != `a "b" é` {
		t.Errorf("jsonString = %q", got)
	}
}

const benchMessage = `{"type":"session_message","user_type":"bench","client_type":"wsbench","msg":"b","data":{"t":1732680000123456789,"p":317,"s":12345}}`

// BenchmarkParseMessage is the receivers' hot path: one call per delivery.
func BenchmarkParseMessage(b *testing.B) {
	in := []byte(benchMessage)
	var m message
	b.ReportAllocs()
	for b.Loop() {
		if err := parseMessage(in, &m); err != nil || !m.benchData() {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseMessageJSON is the encoding/json alternative, for comparison.
func BenchmarkParseMessageJSON(b *testing.B) {
	in := []byte(benchMessage)
	var m struct {
		Type string `json:"type"`
		Data struct {
			T int64 `json:"t"`
			P int64 `json:"p"`
			S int64 `json:"s"`
		} `json:"data"`
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := json.Unmarshal(in, &m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendBroadcast(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = appendBroadcast(buf[:0], 1732680000123456789, 317, 12345)
	}
}

// BenchmarkClientRead is a receiver's whole per-message path over loopback:
// gorilla's frame reading into the reused buffer, then parseMessage.
func BenchmarkClientRead(b *testing.B) {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		pm, _ := websocket.NewPreparedMessage(websocket.TextMessage, []byte(benchMessage))
		for ws.WritePreparedMessage(pm) == nil {
		}
	}))
	defer srv.Close()
	t := &target{handshakeTimeout: time.Second}
	conn, resp, err := t.dialer().Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if resp != nil {
		resp.Body.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := &client{conn: conn, buf: make([]byte, 0, 512)}
	b.ReportAllocs()
	for b.Loop() {
		raw, err := c.read()
		if err != nil {
			b.Fatal(err)
		}
		if err := parseMessage(raw, &c.msg); err != nil || !c.msg.benchData() {
			b.Fatal(err)
		}
	}
}
