package hostile

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsserver/wsserver/test/wstest"
)

// Ping flood bounds: the flood ends at whichever comes first.
const (
	floodPings = 2_000_000
	floodTime  = 10 * time.Second
	// floodSlack is how far above its idle RSS the server's peak may go.
	floodSlack = 50 << 20
)

// process is the wsserver binary running as a child of the test.
type process struct {
	cmd  *exec.Cmd
	addr string
	logs *logScan
}

// startBinary builds ./cmd/wsserver and runs it on the development
// defaults (DJANGO_DEBUG=1) on a free loopback port, until the test ends.
func startBinary(t *testing.T) *process {
	t.Helper()
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/<pid>/status on this system: the server's RSS cannot be read")
	}
	bin := filepath.Join(t.TempDir(), "wsserver")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "github.com/wsserver/wsserver/cmd/wsserver")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "go build: %s", out)

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "DJANGO_DEBUG=1", "LISTEN_ADDR=127.0.0.1:0", "LOG_FORMAT=json", "LOG_LEVEL=debug", "INSTANCE_ID=pingflood")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	require.NoError(t, cmd.Start())
	p := &process{cmd: cmd, logs: &logScan{}}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = pw.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(wait):
			_ = cmd.Process.Kill()
			<-exited
		}
		if pn := p.logs.panics(); len(pn) > 0 {
			t.Errorf("the server logged %d panics; the first:\n%s", len(pn), pn[0])
		}
	})

	// The log tells the address; everything it says is scanned for panics.
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = p.logs.Write(append(line, '\n'))
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == "serving" && rec.Addr != "" {
				select {
				case addr <- rec.Addr:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case p.addr = <-addr:
	case <-exited:
		t.Fatal("the server exited before it served")
	case <-time.After(wait):
		t.Fatal("the server did not log its address")
	}
	return p
}

// memory returns the process's resident set and its peak, in bytes.
func (p *process) memory(t *testing.T) (rss, hwm int64) {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/status")
	require.NoError(t, err)
	for line := range strings.Lines(string(raw)) {
		name, value, ok := strings.Cut(line, ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		require.NoError(t, err, line)
		if name == "VmRSS" {
			rss = kb << 10
		} else {
			hwm = kb << 10
		}
	}
	require.Positive(t, rss)
	require.Positive(t, hwm)
	return rss, hwm
}

// pingFrames is n masked client pings of the largest control payload,
// 125 bytes, ready to write. The mask key is zero, so the payload goes
// as it is.
func pingFrames(n int) []byte {
	frame := append([]byte{0x89, 0x80 | 125, 0, 0, 0, 0}, []byte(strings.Repeat("p", 125))...)
	return []byte(strings.Repeat(string(frame), n))
}

func TestPingFloodKeepsPeakMemoryNearIdle(t *testing.T) {
	p := startBinary(t)
	get := func(path string) int {
		resp, err := httpClient.Get("http://" + p.addr + path)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	require.Equal(t, http.StatusOK, get("/health/"))
	idle, idleHWM := p.memory(t)

	// One socket says hello, then sends pings and never reads a byte.
	conn, resp, err := websocket.DefaultDialer.Dial("ws://"+p.addr+"/ws/session/flood/", nil)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"hello","user_type":"agent","client_type":"web"}`)))
	nc := conn.NetConn()

	const batch = 1000
	frames := pingFrames(batch)
	start := time.Now()
	require.NoError(t, nc.SetWriteDeadline(start.Add(floodTime)))
	sent, peak := 0, idleHWM
	var floodErr error
	var once sync.Once
	for sent < floodPings {
		if _, err := nc.Write(frames); err != nil {
			floodErr = err
			break
		}
		sent += batch
		if sent%(100*batch) == 0 {
			_, hwm := p.memory(t)
			peak = max(peak, hwm)
			if hwm-idle > floodSlack {
				once.Do(func() { t.Logf("past the bound after %d pings", sent) })
			}
		}
	}
	elapsed := time.Since(start)
	var ne net.Error
	switch {
	case floodErr == nil:
		t.Logf("sent %d pings in %v", sent, elapsed.Round(time.Millisecond))
	case errors.As(floodErr, &ne) && ne.Timeout():
		t.Logf("sent %d pings in %v; the server stopped reading them", sent, elapsed.Round(time.Millisecond))
	default:
		t.Logf("sent %d pings in %v; then the server ended the socket (%v)", sent, elapsed.Round(time.Millisecond), floodErr)
	}

	// The server is still whole and serves others.
	require.Equal(t, http.StatusOK, get("/health/"))
	a := wstest.Dial(t, "ws://"+p.addr+"/ws/session/after-flood/", nil, wait)
	b := wstest.Dial(t, "ws://"+p.addr+"/ws/session/after-flood/", nil, wait)
	for _, c := range []*wstest.Client{a, b} {
		c.Send(t, `{"type":"hello","user_type":"agent","client_type":"web"}`)
		require.Equal(t, "hello_ok", c.Next(t)["type"])
	}
	a.Send(t, `{"type":"broadcast","msg":"after the flood"}`)
	assert.Equal(t, "after the flood", b.NextOf(t, "session_message")["msg"])
	_, hwm := p.memory(t)
	peak = max(peak, hwm)
	t.Logf("idle RSS %d MiB (peak %d MiB); peak during the flood %d MiB, %+d MiB",
		idle>>20, idleHWM>>20, peak>>20, (peak-idle)>>20)
	assert.LessOrEqual(t, peak-idle, int64(floodSlack),
		"a ping flood from one socket raised the server's peak RSS by more than %d MiB", floodSlack>>20)
}
