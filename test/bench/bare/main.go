// Command bare is the reference peer of the session fan-out benchmarks: a
// bare gorilla/websocket server of the same shape as wsserver's session
// endpoint, written the plain way, so that wsbench can measure both side by
// side in one sitting (docs/BENCHMARKS.md).
//
// It speaks just enough of PROTOCOL.md §4 for `wsbench fanout`: hello is
// answered with hello_ok, every broadcast goes to every socket of the
// session (the sender's included) as a session_message, and presence is
// answered with the count. It has no auth, presence store, keepalive,
// limits or Redis. Each socket has a reader goroutine and a writer
// goroutine with a bounded channel (a full channel drops the socket, as
// wsserver drops a slow one); the broadcast is encoded and framed once, and
// the writer batches: it takes what is queued and writes it in one flush.
//
//	go run ./test/bench/bare -listen 127.0.0.1:8100 -queue 4096
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8100", "address to listen on")
	queue := flag.Int("queue", 4096, "frames a socket may have waiting; one more drops it")
	flag.Parse()
	h := &hub{queue: *queue, sessions: make(map[string]map[*peer]struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/health/", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/ws/session/", h.serve)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

type hub struct {
	queue    int
	ids      atomic.Int64
	mu       sync.RWMutex
	sessions map[string]map[*peer]struct{}
}

type peer struct {
	ws   *websocket.Conn
	out  chan []byte
	gone chan struct{}
	once sync.Once
}

func (p *peer) drop() { p.once.Do(func() { close(p.gone); _ = p.ws.Close() }) }

// send queues a ready-made frame; a full queue drops the socket.
func (p *peer) send(frame []byte) {
	select {
	case p.out <- frame:
	default:
		p.drop()
	}
}

// write is the socket's writer: it waits for a frame, takes every frame
// queued behind it, and writes them all with one flush.
func (p *peer) write() {
	w := bufio.NewWriterSize(p.ws.NetConn(), 16<<10)
	for {
		select {
		case f := <-p.out:
			_, _ = w.Write(f)
			for more := true; more; {
				select {
				case f := <-p.out:
					_, _ = w.Write(f)
				default:
					more = false
				}
			}
			_ = p.ws.NetConn().SetWriteDeadline(time.Now().Add(10 * time.Second))
			if w.Flush() != nil {
				p.drop()
				return
			}
		case <-p.gone:
			return
		}
	}
}

var upgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferPool: &sync.Pool{},
	CheckOrigin: func(*http.Request) bool { return true }}

func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	id := strings.Trim(strings.TrimPrefix(r.URL.Path, "/ws/session/"), "/")
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	p := &peer{ws: ws, out: make(chan []byte, h.queue), gone: make(chan struct{})}
	go p.write()
	defer func() {
		h.mu.Lock()
		delete(h.sessions[id], p)
		if len(h.sessions[id]) == 0 {
			delete(h.sessions, id)
		}
		h.mu.Unlock()
		p.drop()
	}()
	var in struct {
		Type     string          `json:"type"`
		UserType string          `json:"user_type"`
		Msg      json.RawMessage `json:"msg"`
		Data     json.RawMessage `json:"data"`
	}
	joined := false
	for {
		_, b, err := ws.ReadMessage()
		if err != nil {
			return
		}
		in.Msg, in.Data = nil, nil
		if json.Unmarshal(b, &in) != nil {
			continue
		}
		switch {
		case in.Type == "hello" && !joined:
			joined = true
			conn := fmt.Sprintf("c%d", h.ids.Add(1))
			h.mu.Lock()
			if h.sessions[id] == nil {
				h.sessions[id] = make(map[*peer]struct{})
			}
			h.sessions[id][p] = struct{}{}
			p.send(frame(fmt.Appendf(nil, `{"type":"hello_ok","session_id":%q,"connection_id":%q}`, id, conn)))
			h.mu.Unlock()
		case in.Type == "broadcast" && joined:
			ut, _ := json.Marshal(in.UserType)
			data := in.Data
			if data == nil {
				data = json.RawMessage("null")
			}
			f := frame(fmt.Appendf(nil, `{"type":"session_message","user_type":%s,"client_type":null,"msg":%s,"data":%s}`, ut, in.Msg, data))
			h.mu.RLock()
			for q := range h.sessions[id] {
				q.send(f)
			}
			h.mu.RUnlock()
		case in.Type == "presence" && joined:
			h.mu.RLock()
			n := len(h.sessions[id])
			h.mu.RUnlock()
			p.send(frame(fmt.Appendf(nil, `{"type":"presence","session_id":%q,"count":%d,"connections":[]}`, id, n)))
		}
	}
}

// frame is payload as one final, unmasked text frame.
func frame(payload []byte) []byte {
	b := make([]byte, 0, 10+len(payload))
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x81, byte(n))
	case n <= 0xffff:
		b = append(b, 0x81, 126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0x81, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}
