package containers

import (
	"io"
	"net"
	"sync"
	"time"
)

// proxy forwards TCP connections from a local address to target. Closing it
// closes the listener and cuts every forwarded connection, as a server that
// stops would; listening again on the same address brings it back.
type proxy struct {
	target string
	addr   string // set by the first listen, kept for the next ones

	mu    sync.Mutex
	ln    net.Listener // nil while closed
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func (p *proxy) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.addr = ln.Addr().String()
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	p.wg.Add(1)
	go p.accept(ln)
	return nil
}

// close stops accepting, cuts every connection and waits for the
// forwarding goroutines to end. It does nothing when already closed.
func (p *proxy) close() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	p.wg.Wait()
}

func (p *proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.forward(c)
	}
}

func (p *proxy) forward(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)

	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	// One side is gone: end the other too, as a dead server would.
	_ = client.Close()
	_ = server.Close()
	<-done
}

// track registers c so that close cuts it, or closes c and reports false if
// the proxy is already closed.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}
