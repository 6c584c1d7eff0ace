package hostile

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/adapters/config"
	"github.com/wsserver/wsserver/test/wstest"
)

// The protocol fuzzer's knobs, from the environment:
//
//	PROTOFUZZ_TIME  how long the hostile clients run (Go duration; default 15s)
//	PROTOFUZZ_SEED  the seed of their random choices (default: the clock)
//
// A failure prints its seed; run it again with that seed to replay the
// same choices (the interleaving of the clients may differ).
const (
	fuzzTimeDefault = 15 * time.Second
	fuzzWorkers     = 6
)

// WebSocket opcodes, RFC 6455 §5.2.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

func fuzzSettings(t *testing.T) (time.Duration, uint64) {
	t.Helper()
	d := fuzzTimeDefault
	if v := os.Getenv("PROTOFUZZ_TIME"); v != "" {
		var err error
		d, err = time.ParseDuration(v)
		require.NoError(t, err, "PROTOFUZZ_TIME")
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PROTOFUZZ_SEED"); v != "" {
		var err error
		seed, err = strconv.ParseUint(v, 10, 64)
		require.NoError(t, err, "PROTOFUZZ_SEED")
	}
	return d, seed
}

func TestProtocolFuzz(t *testing.T) {
	duration, seed := fuzzSettings(t)
	t.Logf("seed %d, %v (replay: PROTOFUZZ_SEED=%d go test -run '^TestProtocolFuzz$' ./test/hostile/)", seed, duration, seed)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FAILED with seed %d: replay with PROTOFUZZ_SEED=%d PROTOFUZZ_TIME=%v", seed, seed, duration)
		}
	})
	var limits config.WebSocket
	s := start(t, func(c *config.Config) {
		c.Conversation.LocalTokenDelay = time.Millisecond
		limits = c.WebSocket
	})

	// The well-behaved clients: a pair on a session of their own, and a
	// chat client whose answer is known before the fuzz starts.
	const question = "What are your opening hours?"
	chatter := dialChat(t, s)
	want, code := chat(t, chatter, question)
	require.Empty(t, code)
	require.NotEmpty(t, want)
	sender, listener := s.join(t, "good", "admin"), s.join(t, "good", "agent")
	// A well-behaved listener on the hostile clients' own session: what
	// they broadcast reaches it, and all of it must be what a browser
	// accepts (valid UTF-8 JSON text), or a browser would fail the socket.
	witness := newWitness(t, s, "fuzz")

	stop := make(chan struct{})
	stopAll := sync.OnceFunc(func() { close(stop) })
	defer stopAll() // a failing assertion must not leave the hostile clients running
	var wg sync.WaitGroup
	var stats fuzzStats
	for w := range fuzzWorkers {
		r := rand.New(rand.NewPCG(seed, uint64(w)))
		f := &fuzzer{s: s, r: r, limits: limits, stats: &stats}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				f.episode()
			}
		})
	}

	// While they run, the pair broadcasts and both get every message in
	// order, and the chat client gets its whole answer, again and again.
	var broadcasts, answers int
	var done sync.WaitGroup
	done.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// A fresh socket, so a fresh thread and the same answer.
			c := dialChat(t, s)
			got, code := chat(t, c, question)
			_ = c.Conn.Close()
			if code != "" || got != want {
				t.Errorf("answer %d: error %q, text %q; want %q", i, code, got, want)
				return
			}
			answers++
		}
	})
	deadline := time.Now().Add(duration)
	for time.Now().Before(deadline) {
		sender.Send(t, fmt.Sprintf(`{"type":"broadcast","msg":"%d"}`, broadcasts))
		for _, c := range []*wstest.Client{sender, listener} {
			m := c.NextOf(t, "session_message")
			require.Equal(t, fmt.Sprint(broadcasts), m["msg"], "a well-behaved client missed or reordered a broadcast")
		}
		broadcasts++
		time.Sleep(20 * time.Millisecond) // under RATE_LIMIT_PER_SEC
	}
	stopAll()
	wg.Wait()
	done.Wait()

	// The socket opened before the fuzz is served as well: its thread
	// goes on.
	_, code = chat(t, chatter, question)
	assert.Empty(t, code)

	t.Logf("%d hostile sockets (%d refused at the handshake), %d frames, %d bad handshakes; %d broadcasts and %d answers to the well-behaved clients, all whole",
		stats.sockets.Load(), stats.refused.Load(), stats.frames.Load(), stats.badHandshakes.Load(), broadcasts, answers)
	assert.Positive(t, stats.sockets.Load())
	witness.check(t)
	assert.Equal(t, http.StatusOK, s.status(t, "/health/"))
	s.noPanic(t)
	// Every hostile socket is gone; only the three well-behaved ones stay (the witness has left).
	eventually(t, "the hostile sockets are all closed", func() bool {
		return s.metric(t, `wsserver_sockets_open{endpoint="session"}`) == 2 &&
			s.metric(t, `wsserver_sockets_open{endpoint="chat"}`) == 1
	})
}

// witness reads a session and checks every frame it gets.
type witness struct {
	conn   *websocket.Conn
	done   chan struct{}
	frames int      // read after done
	bad    []string // frames a browser would refuse; read after done
	err    error    // how the reading ended; read after done
}

func newWitness(t *testing.T, s *server, session string) *witness {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(s.ws("/ws/session/"+session+"/"), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","user_type":"agent","client_type":"web"}`)))
	w := &witness{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			op, p, err := conn.ReadMessage()
			if err != nil {
				w.err = err
				return
			}
			w.frames++
			switch {
			case op != websocket.TextMessage:
				w.bad = append(w.bad, fmt.Sprintf("opcode %d: %q", op, p))
			case !utf8.Valid(p):
				w.bad = append(w.bad, fmt.Sprintf("not UTF-8: %q", p))
			case !json.Valid(p):
				w.bad = append(w.bad, fmt.Sprintf("not JSON: %q", p))
			}
		}
	}()
	return w
}

// check asserts that the witness is still connected, then ends it and
// asserts that every frame it got was valid.
func (w *witness) check(t *testing.T) {
	t.Helper()
	select {
	case <-w.done:
		t.Errorf("the server ended a well-behaved listener of the hostile session: %v", w.err)
	default:
		_ = w.conn.Close()
		<-w.done
	}
	t.Logf("the listener of the hostile session read %d frames", w.frames)
	for i, b := range w.bad {
		if i == 5 {
			t.Errorf("... and %d more", len(w.bad)-5)
			break
		}
		t.Errorf("the listener of the hostile session got a frame a browser refuses: %.300s", b)
	}
}

func dialChat(t *testing.T, s *server) *wstest.Client {
	t.Helper()
	return wstest.Dial(t, s.ws("/ws/chat/"), nil, wait)
}

type fuzzStats struct {
	sockets, refused, frames, badHandshakes atomic.Int64
}

// fuzzer is one hostile client, opening socket after socket.
type fuzzer struct {
	s      *server
	r      *rand.Rand
	limits config.WebSocket
	stats  *fuzzStats
	nc     net.Conn // the socket of the episode
}

// episode is one hostile socket's life: a handshake, some frames, an end.
func (f *fuzzer) episode() {
	r := f.r
	if r.IntN(20) == 0 {
		f.badHandshake()
		return
	}
	session := r.IntN(2) == 0
	path := "/ws/chat/"
	if session {
		path = "/ws/session/" + f.pick("fuzz", "fuzz", "fuzz", "fuzz-2", "x", strings.Repeat("s", 128)) + "/"
	}
	conn, resp, err := websocket.DefaultDialer.Dial(f.s.ws(path), nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	if err != nil {
		f.stats.refused.Add(1)
		return
	}
	f.stats.sockets.Add(1)
	nc := conn.NetConn()
	f.nc = nc
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(2 * time.Second)) // a server that stopped reading blocks writes
	if r.IntN(4) > 0 {                                  // the others never read
		go func() { _, _ = io.Copy(io.Discard, nc) }()
	}
	if session && r.IntN(4) > 0 {
		f.write(frame(true, 0, opText, true, []byte(f.hello())))
		// Broadcasts that parse, with whatever text: what reaches the
		// session's listeners, the witness among them.
		for range r.IntN(4) {
			f.write(frame(true, 0, opText, true, fmt.Appendf(nil, `{"type":"broadcast","msg":"%s"}`, f.text(r.IntN(60)))))
		}
	}
	for range r.IntN(30) {
		if !f.write(f.frames(session)) {
			return
		}
	}
	switch r.IntN(4) {
	case 0: // a proper close, and a moment to read the reply
		f.write(frame(true, 0, opClose, true, closePayload(websocket.CloseNormalClosure, "bye")))
		time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
	case 1: // half a frame, then gone
		fr := f.frames(session)
		f.write(fr[:r.IntN(len(fr))])
	default: // gone without a word
	}
}

// write sends b; it reports false once the server has closed.
func (f *fuzzer) write(b []byte) bool {
	_, err := f.nc.Write(b)
	f.stats.frames.Add(1)
	return err == nil
}

func (f *fuzzer) pick(choices ...string) string { return choices[f.r.IntN(len(choices))] }

func (f *fuzzer) hello() string {
	return fmt.Sprintf(`{"type":"hello","user_type":%q,"client_type":%q}`,
		f.pick("admin", "agent", "user", "", "x"), f.pick("web", "mobile", ""))
}

// text is a string of n runes of various kinds: ASCII, multi-byte, JSON
// escapes that decode to odd things.
func (f *fuzzer) text(n int) string {
	var b strings.Builder
	for range n {
		switch f.r.IntN(10) {
		case 0:
			b.WriteString(f.pick("é", "€", "😀", "\u2028", "\u0000", "\ufeff", "\xff", "\xed\xa0\x80", "\xc3"))
		case 1:
			b.WriteString(f.pick(`\"`, `\\`, `\n`, `\ud800`, `\udc00`, `\u0000`, `\ud83d\ude00`))
		default:
			b.WriteByte(byte('a' + f.r.IntN(26)))
		}
	}
	return b.String()
}

// message is a JSON message, valid or nearly so, for the endpoint.
func (f *fuzzer) message(session bool) string {
	r := f.r
	n := r.IntN(40)
	if r.IntN(8) == 0 { // near the limits
		n = f.limits.MaxMessageChars + r.IntN(5) - 2
	}
	if session {
		switch r.IntN(6) {
		case 0:
			return f.hello()
		case 1:
			return `{"type":"presence"}`
		case 2:
			return fmt.Sprintf(`{"type":"broadcast","msg":%s,"data":%s}`, f.value(n), f.value(r.IntN(10)))
		default:
			return fmt.Sprintf(`{"type":"broadcast","msg":"%s","data":{"k":[1,2,{"n":null}]}}`, f.text(n))
		}
	}
	switch r.IntN(6) {
	case 0:
		return `{"type":"ping"}`
	case 1:
		return `{"type":"cancel"}`
	case 2:
		return fmt.Sprintf(`{"type":"chat","message":%s,"thread_id":%s,"channel":%s,"data":%s}`,
			f.value(n), f.value(r.IntN(40)), f.value(5), f.value(r.IntN(10)))
	default:
		thread := ""
		if r.IntN(2) == 0 {
			// "fuzz" is also the witness's session: a thread's chat
			// events are mirrored to the session of the same id.
			thread = `,"thread_id":"` + f.pick("fuzz", "fuzz-1", "fuzz-2") + `"`
		}
		return fmt.Sprintf(`{"type":"chat","message":"%s","channel":"web","data":[]%s}`, f.text(n), thread)
	}
}

// value is a JSON value of any type, of about size n where that applies.
func (f *fuzzer) value(n int) string {
	switch f.r.IntN(8) {
	case 0:
		return "null"
	case 1:
		return strconv.Itoa(f.r.IntN(1 << 20))
	case 2:
		return "true"
	case 3:
		return `[` + strings.Repeat(`[`, n%64) + strings.Repeat(`]`, n%64) + `]`
	case 4:
		return `{"a":` + strconv.Quote(f.text(n)) + `}`
	default:
		return `"` + f.text(n) + `"`
	}
}

// frames is one hostile frame or a few, as bytes on the wire.
func (f *fuzzer) frames(session bool) []byte {
	r := f.r
	msg := []byte(f.message(session))
	switch r.IntN(16) {
	case 0, 1, 2: // a message, valid or nearly
		return frame(true, 0, opText, true, msg)
	case 3: // truncated JSON
		return frame(true, 0, opText, true, msg[:r.IntN(len(msg))])
	case 4: // wrong types
		return frame(true, 0, opText, true, []byte(f.pick(`{"type":1}`, `[]`, `null`, `"hello"`, `{"type":"broadcast","msg":{}}`,
			`{"type":"chat","message":["x"]}`, `{"type":"hello","user_type":7}`, `{}`, `{"type":"`+f.text(200)+`"}`, ``)))
	case 5: // invalid UTF-8
		bad := append([]byte(nil), msg...)
		bad[r.IntN(len(bad))] = f.pick("\xff", "\xc0", "\xed", "\x80")[0]
		return frame(true, 0, opText, true, bad)
	case 6: // binary
		return frame(true, 0, opBinary, true, msg)
	case 7: // fragmented: in order, or with a control frame between
		cut := r.IntN(len(msg))
		out := frame(false, 0, opText, true, msg[:cut])
		if r.IntN(2) == 0 {
			out = append(out, frame(true, 0, opPing, true, []byte("mid"))...)
		}
		return append(out, frame(true, 0, opContinuation, true, msg[cut:])...)
	case 8: // a continuation with nothing to continue, or a fragment never finished
		if r.IntN(2) == 0 {
			return frame(true, 0, opContinuation, true, msg)
		}
		return frame(false, 0, opText, true, msg)
	case 9: // control frames with a payload too big, or fragmented
		op := []byte{opPing, opPong, opClose}[r.IntN(3)]
		if r.IntN(2) == 0 {
			return frame(true, 0, op, true, make([]byte, 126+r.IntN(1000)))
		}
		return frame(false, 0, op, true, []byte("frag"))
	case 10: // pings and pongs, many
		out := []byte(nil)
		for range 1 + r.IntN(50) {
			out = append(out, frame(true, 0, []byte{opPing, opPong}[r.IntN(2)], true, make([]byte, r.IntN(126)))...)
		}
		return out
	case 11: // a close with an odd code or payload
		return frame(true, 0, opClose, true, f.closeBody())
	case 12: // reserved bits, unknown opcodes, unmasked
		switch r.IntN(3) {
		case 0:
			return frame(true, byte(1+r.IntN(7)), opText, true, msg)
		case 1:
			return frame(true, 0, []byte{3, 4, 5, 6, 7, 0xb, 0xf}[r.IntN(7)], true, msg)
		}
		return frame(true, 0, opText, false, msg)
	case 13: // huge: at the frame limit, just past it, or a length that lies
		switch r.IntN(3) {
		case 0:
			return frame(true, 0, opText, true, []byte(`"`+strings.Repeat("a", f.limits.MaxFrameBytes-2+r.IntN(5)-2)+`"`))
		case 1:
			hdr := []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
			binary.BigEndian.PutUint64(hdr[2:10], 1<<62)
			return append(hdr, msg...)
		}
		return frame(true, 0, opText, true, []byte(strings.Repeat("x", f.limits.MaxFrameBytes*2)))
	case 14: // random bytes
		b := make([]byte, 1+r.IntN(200))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	default: // a valid frame with a few bytes flipped
		b := frame(true, 0, opText, true, msg)
		for range 1 + r.IntN(3) {
			b[r.IntN(len(b))] ^= byte(1 << r.IntN(8))
		}
		return b
	}
}

func (f *fuzzer) closeBody() []byte {
	switch f.r.IntN(4) {
	case 0:
		return []byte{0x03} // one byte: no room for a code
	case 1:
		return closePayload(f.r.IntN(6000), "")
	case 2:
		return append(closePayload(websocket.CloseNormalClosure, ""), 0xff, 0xfe)
	}
	return closePayload([]int{1000, 1001, 1005, 1006, 1015, 2999, 4000}[f.r.IntN(7)], f.text(f.r.IntN(100)))
}

// badHandshake sends one broken upgrade request and reads what comes back.
func (f *fuzzer) badHandshake() {
	f.stats.badHandshakes.Add(1)
	c, err := net.Dial("tcp", f.s.addr)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	path := f.pick("/ws/chat/", "/ws/session/a/", "/ws/session/"+f.text(20)+"/", "/ws/session/"+strings.Repeat("x", 200)+"/")
	headers := []string{"Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade",
		"Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="}
	switch f.r.IntN(5) {
	case 0:
		headers = headers[:2+f.r.IntN(3)]
	case 1:
		headers[4] = "Sec-WebSocket-Key: " + f.text(30)
	case 2:
		headers[3] = "Sec-WebSocket-Version: " + f.pick("8", "", "99999999999")
	case 3:
		headers = append(headers, "X-Big: "+strings.Repeat("b", 40<<10))
	default:
		headers = append(headers, "Origin: http://"+f.text(10)+".example", "Authorization: "+f.text(10))
	}
	req := "GET " + path + " HTTP/1.1\r\n" + strings.Join(headers, "\r\n") + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 1<<16))
}

// frame encodes one WebSocket frame. A masked frame gets a random key.
func frame(fin bool, rsv, op byte, masked bool, payload []byte) []byte {
	b0 := op | rsv<<4
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	var mask byte
	if masked {
		mask = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mask|byte(n))
	case n < 1<<16:
		out = append(out, mask|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mask|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !masked {
		return append(out, payload...)
	}
	key := rand.Uint32()
	out = binary.BigEndian.AppendUint32(out, key)
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], key)
	for i, c := range payload {
		out = append(out, c^k[i%4])
	}
	return out
}

func closePayload(code int, reason string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(code)), reason...)
}

func TestFrameEncodesAsGorillaReadsIt(t *testing.T) {
	// The fuzzer's own encoder, checked against a real reader, so that
	// its valid frames are valid.
	tests := []struct {
		op      int
		payload string
	}{
		{websocket.TextMessage, "hi"},
		{websocket.TextMessage, strings.Repeat("m", 300)},
		{websocket.BinaryMessage, strings.Repeat("l", 70000)},
	}
	type message struct {
		op      int
		payload string
	}
	got := make(chan message, len(tests))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			op, p, err := c.ReadMessage()
			if err != nil {
				close(got)
				return
			}
			got <- message{op, string(p)}
		}
	}))
	defer srv.Close()
	conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	defer conn.Close()
	for _, tt := range tests {
		_, err := conn.NetConn().Write(frame(true, 0, byte(tt.op), true, []byte(tt.payload)))
		require.NoError(t, err)
	}
	for _, tt := range tests {
		m := <-got
		assert.Equal(t, tt.op, m.op)
		assert.Equal(t, tt.payload, m.payload)
	}
}
