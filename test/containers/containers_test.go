package containers

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a container (skipped by -short)")
	}
}

func TestRedisContainerStopStart(t *testing.T) {
	skipShort(t)
	t.Setenv("TEST_REDIS_URL", "")
	ctx := t.Context()
	r, err := StartRedis(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, r.Terminate(context.Background())) })

	testStopStart(t, r)
}

// TestRedisProxyStopStart runs the same contract on a ready server (here a
// container of its own) named by TEST_REDIS_URL.
func TestRedisProxyStopStart(t *testing.T) {
	skipShort(t)
	t.Setenv("TEST_REDIS_URL", "")
	ctx := t.Context()
	server, err := StartRedis(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, server.Terminate(context.Background())) })

	t.Setenv("TEST_REDIS_URL", server.URL())
	r, err := StartRedis(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, r.Terminate(context.Background())) })
	require.NotEqual(t, server.URL(), r.URL(), "served through the proxy")

	testStopStart(t, r)
}

func testStopStart(t *testing.T, r *Redis) {
	t.Helper()
	ctx := t.Context()
	url := r.URL()
	require.True(t, strings.HasPrefix(url, "redis://127.0.0.1:"), url)
	key := Prefix(t) + "k"

	client := newRedisClient(t, url)
	require.NoError(t, client.Do(ctx, client.B().Ping().Build()).Error())
	require.NoError(t, client.Do(ctx, client.B().Set().Key(key).Value("v").Build()).Error())

	require.NoError(t, r.Stop(ctx))
	require.Error(t, client.Do(ctx, client.B().Ping().Build()).Error(), "open connection after Stop")
	require.Error(t, redisDo(ctx, url, func(c rueidis.Client) rueidis.Completed { return c.B().Ping().Build() }),
		"new connection after Stop")

	require.NoError(t, r.Start(ctx))
	require.Equal(t, url, r.URL())
	fresh := newRedisClient(t, url)
	require.NoError(t, fresh.Do(ctx, fresh.B().Ping().Build()).Error())
	err := fresh.Do(ctx, fresh.B().Get().Key(key).Build()).Error()
	assert.True(t, rueidis.IsRedisNil(err), "key survived the restart: %v", err)
}

func newRedisClient(t *testing.T, url string) rueidis.Client {
	t.Helper()
	opt, err := rueidis.ParseURL(url)
	require.NoError(t, err)
	opt.ForceSingleClient = true
	opt.DisableRetry = true
	c, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

func TestPrefixIsUnique(t *testing.T) {
	a, b := Prefix(t), Prefix(t)
	assert.NotEqual(t, a, b)
	assert.True(t, strings.HasPrefix(a, "test:TestPrefixIsUnique:"), a)
}

func TestPostgres(t *testing.T) {
	skipShort(t)
	t.Setenv("TEST_DATABASE_URL", "")
	ctx := t.Context()
	p, err := StartPostgres(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, p.Terminate(context.Background())) })

	var names []string
	t.Run("NewDatabase", func(t *testing.T) {
		names = useNewDatabase(t, p)
	})
	t.Run("ReadyServer", func(t *testing.T) {
		t.Setenv("TEST_DATABASE_URL", p.DSN())
		ready, err := StartPostgres(t.Context())
		require.NoError(t, err)
		require.Equal(t, p.DSN(), ready.DSN())
		names = append(names, useNewDatabase(t, ready)...)
		require.NoError(t, ready.Terminate(t.Context()))
	})

	// The subtests' cleanups dropped their databases.
	conn, err := pgx.Connect(ctx, p.DSN())
	require.NoError(t, err)
	defer conn.Close(ctx)
	var left int
	require.NoError(t, conn.QueryRow(ctx,
		"SELECT count(*) FROM pg_database WHERE datname = ANY($1)", names).Scan(&left))
	assert.Zero(t, left, "databases left behind: %v", names)
}

// useNewDatabase creates two databases, checks that they are apart, and
// returns their names.
func useNewDatabase(t *testing.T, p *Postgres) []string {
	t.Helper()
	ctx := t.Context()
	var names []string
	for range 2 {
		conn, err := pgx.Connect(ctx, p.NewDatabase(ctx, t))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) }) // left open on purpose: the drop must force it

		var name string
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&name))
		_, err = conn.Exec(ctx, "CREATE TABLE thread (id bigint PRIMARY KEY)")
		require.NoError(t, err, "each database starts empty")
		_, err = conn.Exec(ctx, "INSERT INTO thread VALUES (1)")
		require.NoError(t, err)
		names = append(names, name)
	}
	require.NotEqual(t, names[0], names[1])
	return names
}

// A cluster starts with every slot served and a replica per master in
// sync; a key lives on one master; a failover moves that slot to the
// replica and the cluster serves every slot again.
func TestClusterStartsAndFailsOver(t *testing.T) {
	skipShort(t)
	t.Setenv("TEST_REDIS_CLUSTER_URL", "")
	ctx := t.Context()
	c, err := StartCluster(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Terminate(context.Background())) })

	nodes, err := c.Nodes(ctx)
	require.NoError(t, err)
	var masters, replicas int
	for _, n := range nodes {
		if n.Master {
			masters++
		} else {
			replicas++
		}
	}
	assert.Equal(t, 3, masters)
	assert.Equal(t, 3, replicas)
	// Each id is the node's own, and each replica's master is a master
	// with slots: what Failover looks a replica up by.
	ids := make(map[string]ClusterNode)
	for _, n := range nodes {
		myid, err := c.nodeDo(ctx, n.Addr, func(b rueidis.Builder) rueidis.Completed { return b.ClusterMyid().Build() }).ToString()
		require.NoError(t, err)
		assert.Equal(t, myid, n.ID, "the id of %s", n.Addr)
		ids[n.ID] = n
	}
	for _, n := range nodes {
		if !n.Master {
			m := ids[n.MasterID]
			assert.True(t, m.Master && len(m.Slots) > 0, "replica %s: its master %q is no master with slots", n.Addr, n.MasterID)
		}
	}

	client := newClusterClient(t, c.URL())
	key := Prefix(t) + "{k}"
	require.NoError(t, client.Do(ctx, client.B().Set().Key(key).Value("v").Build()).Error())
	owner := func() string {
		nodes, err := c.Nodes(ctx)
		require.NoError(t, err)
		slot, err := client.Do(ctx, client.B().ClusterKeyslot().Key(key).Build()).AsInt64()
		require.NoError(t, err)
		for _, n := range nodes {
			for _, r := range n.Slots {
				if n.Master && int64(r[0]) <= slot && slot <= int64(r[1]) {
					return n.ID
				}
			}
		}
		return ""
	}
	before := owner()
	require.NotEmpty(t, before)
	require.NoError(t, c.Failover(ctx, key))
	after := owner()
	assert.NotEqual(t, before, after, "another node serves the key's slot")
	require.Eventually(t, func() bool {
		v, err := client.Do(ctx, client.B().Get().Key(key).Build()).ToString()
		return err == nil && v == "v"
	}, 30*time.Second, 50*time.Millisecond, "the key survived on the promoted replica")
}

func newClusterClient(t *testing.T, url string) rueidis.Client {
	t.Helper()
	opt, err := rueidis.ParseURL(url)
	require.NoError(t, err)
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	require.Equal(t, rueidis.ClientModeCluster, c.Mode())
	return c
}

func TestParseClusterNodes(t *testing.T) {
	const (
		m1 = "386a02fb89d0131d9737a189e6d91bf268763189"
		m2 = "7a6497ff95c6d996c57b5723175f6c2c5a1fc15d"
		r1 = "0010f55028d224144fb2f4ad367314db19ba3a82"
		r2 = "57aa80521d5b1113c2121dace9a29f373b58383b"
	)
	view := m1 + " 127.0.0.1:36467@43849 myself,master - 0 1796322982000 3 connected 0-8191 [8192->-" + m2 + "]\n" +
		r1 + " 127.0.0.1:36287@39515 slave " + m1 + " 0 1796322981000 3 connected\n" +
		m2 + " 127.0.0.1:39725@36465 master - 0 1796322981000 4 connected 8192 8193-16383\n" +
		r2 + " 127.0.0.1:46437@33475 slave,fail " + m2 + " 1796322981000 1796322981526 4 disconnected\n"
	nodes, err := parseClusterNodes(view)
	require.NoError(t, err)
	require.Len(t, nodes, 4)
	assert.Equal(t, ClusterNode{ID: m1, Addr: "127.0.0.1:36467", Master: true, Slots: [][2]int{{0, 8191}},
		flags: []string{"myself", "master"}}, nodes[0])
	assert.Equal(t, ClusterNode{ID: r1, Addr: "127.0.0.1:36287", MasterID: m1, flags: []string{"slave"}}, nodes[1])
	assert.Equal(t, [][2]int{{8192, 8192}, {8193, 16383}}, nodes[2].Slots)
	assert.True(t, nodes[3].failed())
	assert.Equal(t, "fail", nodes[3].unsettled())
	assert.Empty(t, nodes[0].unsettled())

	master, replica, err := slotOwner(nodes, 100)
	require.NoError(t, err)
	assert.Equal(t, m1, master.ID)
	assert.Equal(t, r1, replica.ID)
	_, _, err = slotOwner(slices.DeleteFunc(nodes, ClusterNode.failed), 9000)
	require.ErrorContains(t, err, "master 127.0.0.1:39725 of slot 9000 has no replica")

	for name, bad := range map[string]string{
		// RESP3's verbatim string, read with its format in front.
		"verbatim format": "txt:" + view,
		"short line":      m1 + " 127.0.0.1:1@2 master - 0 0 1",
		"master id":       r1 + " 127.0.0.1:1@2 slave 42 0 0 1 connected",
		"slot range":      m1 + " 127.0.0.1:1@2 master - 0 0 1 connected 0-x",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := parseClusterNodes(bad)
			assert.ErrorContains(t, err, "cluster nodes: ")
		})
	}
}
