package containers

import (
	"bufio"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPostgresVia(t *testing.T) {
	tests := []struct {
		dsn, addr, want string
	}{
		{"postgres://u:p@127.0.0.1:5432/db?sslmode=disable", "127.0.0.1:6000", "postgres://u:p@127.0.0.1:6000/db?sslmode=disable"},
		{"postgresql://u@localhost/db", "127.0.0.1:6000", "postgresql://u@127.0.0.1:6000/db"},
		{"host=127.0.0.1 port=5432 user=u dbname=db", "127.0.0.1:6000", "host=127.0.0.1 port=5432 user=u dbname=db host=127.0.0.1 port=6000"},
	}
	for _, tt := range tests {
		t.Run(tt.dsn, func(t *testing.T) {
			got, err := PostgresDSNVia(tt.dsn, tt.addr)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			addr, err := PostgresAddr(got)
			require.NoError(t, err)
			assert.Equal(t, tt.addr, addr, "the rewritten DSN names the proxy")
		})
	}
}

func TestRedisVia(t *testing.T) {
	got, err := RedisURLVia("redis://:secret@127.0.0.1:6379/3", "127.0.0.1:7000")
	require.NoError(t, err)
	assert.Equal(t, "redis://:secret@127.0.0.1:7000/3", got)
	addr, err := RedisAddr("redis://localhost/0")
	require.NoError(t, err)
	assert.Equal(t, "localhost:6379", addr)
}

// TestToxicProxy runs a proxy to a line echo server: data passes, a
// ResetOnMatch toxic cuts the connection on its match and drops it, and a
// disabled proxy refuses connections until enabled on the same address.
func TestToxicProxy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()

	p := NewToxiproxy().NewToxicProxy(t, ln.Addr().String())
	echo := func(c net.Conn, line string) (string, error) {
		if _, err := c.Write([]byte(line)); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}

	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	got, err := echo(c, "hello\n")
	require.NoError(t, err)
	assert.Equal(t, "hello\n", got)

	p.AddToxic(Toxic{Name: "cut", Type: ResetOnMatch, Stream: "downstream", Attributes: map[string]any{"match": "secret"}})
	got, err = echo(c, "still fine\n")
	require.NoError(t, err)
	assert.Equal(t, "still fine\n", got)
	_, err = echo(c, "a secret\n")
	require.Error(t, err, "the matching reply is dropped and the connection cut")
	p.RemoveToxic("cut")

	addr := p.Addr()
	p.Disable()
	_, err = net.Dial("tcp", addr)
	require.Error(t, err, "a disabled proxy refuses connections")
	p.Enable()
	assert.Equal(t, addr, p.Addr())
	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c2.Close()
	got, err = echo(c2, "back\n")
	require.NoError(t, err)
	assert.Equal(t, "back\n", got)
}
