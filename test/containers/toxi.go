package containers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
)

// Toxiproxy is toxiproxy's server run in this process, as a library: no
// image and no HTTP API, only proxies on 127.0.0.1 that a test breaks on
// purpose (see NewToxicProxy).
type Toxiproxy struct {
	server *toxiproxy.ApiServer
	names  atomic.Int64
}

// NewToxiproxy returns a server with no proxies. Its logs are discarded.
func NewToxiproxy() *Toxiproxy {
	return &Toxiproxy{server: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())}
}

// ToxicProxy forwards TCP connections from a port of 127.0.0.1 to an
// upstream server, through toxics: latency, timeout, reset_peer,
// bandwidth, limit_data, or ResetOnMatch. Disable cuts it as a server that
// stops would; Enable brings it back on the same address.
type ToxicProxy struct {
	t     testing.TB
	proxy *toxiproxy.Proxy
}

// NewToxicProxy starts a proxy to upstream (host:port) on a free port of
// 127.0.0.1. It is removed, every connection cut, when t ends.
func (tp *Toxiproxy) NewToxicProxy(t testing.TB, upstream string) *ToxicProxy {
	t.Helper()
	name := fmt.Sprintf("proxy-%d", tp.names.Add(1))
	p := toxiproxy.NewProxy(tp.server, name, "127.0.0.1:0", upstream)
	if err := tp.server.Collection.Add(p, true); err != nil {
		t.Fatalf("containers: toxiproxy %s to %s: %v", name, upstream, err)
	}
	t.Cleanup(func() { _ = tp.server.Collection.Remove(name) })
	return &ToxicProxy{t: t, proxy: p}
}

// Addr is the proxy's host:port.
func (p *ToxicProxy) Addr() string {
	p.proxy.Lock()
	defer p.proxy.Unlock()
	return p.proxy.Listen
}

// Disable cuts every connection and refuses new ones until Enable.
func (p *ToxicProxy) Disable() { p.proxy.Stop() }

// Enable listens again on the same address.
func (p *ToxicProxy) Enable() {
	p.t.Helper()
	if err := p.proxy.Start(); err != nil && !errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
		p.t.Fatalf("containers: enable toxiproxy %s: %v", p.proxy.Name, err)
	}
}

// Toxic is one toxic of toxiproxy, as its API takes it.
type Toxic struct {
	// Name is unique within the proxy; RemoveToxic takes it.
	Name string `json:"name"`
	// Type is latency, timeout, reset_peer, bandwidth, limit_data,
	// slow_close, slicer, or ResetOnMatch.
	Type string `json:"type"`
	// Stream is "upstream" (client to server) or "downstream" (server to
	// client; the default).
	Stream     string         `json:"stream,omitempty"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// AddToxic puts toxic on every connection of the proxy, those open now
// and those to come.
func (p *ToxicProxy) AddToxic(toxic Toxic) {
	p.t.Helper()
	raw, err := json.Marshal(toxic)
	if err != nil {
		p.t.Fatalf("containers: toxic %s: %v", toxic.Name, err)
	}
	if _, err := p.proxy.Toxics.AddToxicJson(bytes.NewReader(raw)); err != nil {
		p.t.Fatalf("containers: add toxic %s: %v", toxic.Name, err)
	}
}

// RemoveToxic takes the toxic named name off every connection.
func (p *ToxicProxy) RemoveToxic(name string) {
	p.t.Helper()
	if err := p.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
		p.t.Fatalf("containers: remove toxic %s: %v", name, err)
	}
}

// ResetOnMatch is the type of a toxic of this package's own: it passes data
// until a chunk that contains its attribute "match", drops that chunk and
// cuts the connection. Put downstream with the reply of one command, it
// lets the command run on the server but loses its reply.
const ResetOnMatch = "wsserver_reset_on_match"

var registerToxics sync.Once

// resetOnMatch is the toxic named ResetOnMatch.
type resetOnMatch struct {
	Match string `json:"match"`
}

func (t *resetOnMatch) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
			if t.Match != "" && bytes.Contains(c.Data, []byte(t.Match)) {
				stub.Close()
				return
			}
			stub.Output <- c
		}
	}
}

func init() {
	registerToxics.Do(func() { toxics.Register(ResetOnMatch, new(resetOnMatch)) })
}

// RedisURLVia returns the redis:// URL u with its host replaced by addr.
func RedisURLVia(u, addr string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("containers: redis url: %w", err)
	}
	parsed.Host = addr
	return parsed.String(), nil
}

// RedisAddr returns the host:port of the redis:// URL u.
func RedisAddr(u string) (string, error) {
	parsed, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("containers: redis url: %w", err)
	}
	if parsed.Port() == "" {
		return net.JoinHostPort(parsed.Hostname(), "6379"), nil
	}
	return parsed.Host, nil
}

// PostgresAddr returns the host:port of the server of dsn, a URL or a
// keyword/value string.
func PostgresAddr(dsn string) (string, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", fmt.Errorf("containers: postgres dsn: %w", err)
	}
	return net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), nil
}

// PostgresDSNVia returns dsn with its server replaced by addr (host:port).
func PostgresDSNVia(dsn, addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("containers: proxy address: %w", err)
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("containers: postgres dsn: %w", err)
		}
		u.Host = addr
		return u.String(), nil
	}
	return dsn + " host=" + host + " port=" + port, nil // the last setting wins
}
