package containers

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/rueidis"
)

// Cluster is a Redis Cluster for tests: TEST_REDIS_CLUSTER_MASTERS masters
// (default 3) with TEST_REDIS_CLUSTER_REPLICAS replicas each (default 1),
// as redis-server processes on 127.0.0.1 (Debian's redis-server, or the
// binary TEST_REDIS_SERVER names), each in cluster mode with no
// persistence; or the ready cluster that TEST_REDIS_CLUSTER_URL names.
// Processes are cheaper than containers here, and a cluster's nodes
// announce their addresses to clients, which 127.0.0.1 keeps simple. Its
// methods are not safe for concurrent use.
type Cluster struct {
	url   string
	auth  rueidis.ClientOption // the URL's credentials, for each node
	dir   string               // the nodes' files; empty for a ready cluster
	procs []*exec.Cmd
}

// StartCluster starts a cluster, or checks the ready one named by
// TEST_REDIS_CLUSTER_URL, and returns once every slot is served and every
// replica is in sync with its master. The caller must Terminate it.
func StartCluster(ctx context.Context) (*Cluster, error) {
	if ready := os.Getenv("TEST_REDIS_CLUSTER_URL"); ready != "" {
		opt, err := rueidis.ParseURL(ready)
		if err != nil {
			return nil, fmt.Errorf("containers: TEST_REDIS_CLUSTER_URL: %w", err)
		}
		c := &Cluster{url: ready, auth: opt}
		if err := c.waitHealthy(ctx, 0, 0); err != nil {
			return nil, fmt.Errorf("containers: TEST_REDIS_CLUSTER_URL: %w", err)
		}
		clusterURLNotice.Do(func() {
			log.Printf("containers: TEST_REDIS_CLUSTER_URL is set: tests use the cluster at %q", redactURL(ready)) //nolint:gosec // the operator's own setting, password redacted and quoted
		})
		return c, nil
	}
	masters, err := envInt("TEST_REDIS_CLUSTER_MASTERS", 3, 1, 16)
	if err != nil {
		return nil, err
	}
	replicas, err := envInt("TEST_REDIS_CLUSTER_REPLICAS", 1, 0, 4)
	if err != nil {
		return nil, err
	}
	server := envOr("TEST_REDIS_SERVER", "redis-server")
	if _, err := exec.LookPath(server); err != nil {
		return nil, fmt.Errorf("containers: the Redis Cluster tests run redis-server processes: %w (apt-get install redis-server, or set TEST_REDIS_SERVER or TEST_REDIS_CLUSTER_URL)", err)
	}
	dir, err := os.MkdirTemp("", "wsserver-cluster-")
	if err != nil {
		return nil, fmt.Errorf("containers: cluster: %w", err)
	}
	c := &Cluster{dir: dir}
	if err := c.create(ctx, server, masters, replicas); err != nil {
		return nil, errors.Join(fmt.Errorf("containers: start cluster: %w", err), c.Terminate(ctx))
	}
	return c, nil
}

// URL returns a redis:// URL of one master; clients find the others.
func (c *Cluster) URL() string { return c.url }

// node is one redis-server of a cluster being made.
type node struct {
	port, bus int
	id        string
}

func (n node) addr() string { return net.JoinHostPort(loopback.String(), strconv.Itoa(n.port)) }

func (c *Cluster) create(ctx context.Context, server string, masters, replicas int) error {
	nodes := make([]node, masters*(1+replicas))
	for i := range nodes {
		if err := c.spawn(ctx, server, &nodes[i]); err != nil {
			return err
		}
	}
	c.url = "redis://" + nodes[0].addr()
	for i := range nodes {
		id, err := c.nodeDo(ctx, nodes[i].addr(), func(b rueidis.Builder) rueidis.Completed { return b.ClusterMyid().Build() }).ToString()
		if err != nil {
			return fmt.Errorf("node %s: cluster myid: %w", nodes[i].addr(), err)
		}
		nodes[i].id = id
	}
	// The slots, in equal ranges, to the masters; then every node meets
	// the first, and the gossip does the rest.
	for i := range masters {
		from, to := i*16384/masters, (i+1)*16384/masters-1
		if err := c.nodeDo(ctx, nodes[i].addr(), func(b rueidis.Builder) rueidis.Completed {
			return b.ClusterAddslotsrange().StartSlotEndSlot().StartSlotEndSlot(int64(from), int64(to)).Build()
		}).Error(); err != nil {
			return fmt.Errorf("node %s: addslotsrange: %w", nodes[i].addr(), err)
		}
	}
	for _, n := range nodes[1:] {
		if err := c.nodeDo(ctx, n.addr(), func(b rueidis.Builder) rueidis.Completed {
			return b.ClusterMeet().Ip(loopback.String()).Port(int64(nodes[0].port)).ClusterBusPort(int64(nodes[0].bus)).Build()
		}).Error(); err != nil {
			return fmt.Errorf("node %s: meet: %w", n.addr(), err)
		}
	}
	if err := retryFor(ctx, func(ctx context.Context) error {
		for _, n := range nodes {
			out, err := c.nodeDo(ctx, n.addr(), func(b rueidis.Builder) rueidis.Completed { return b.ClusterNodes().Build() }).ToString()
			if err != nil {
				return err
			}
			if got := len(strings.Split(strings.TrimSpace(out), "\n")); got != len(nodes) {
				return fmt.Errorf("node %s knows %d nodes of %d", n.addr(), got, len(nodes))
			}
		}
		return nil
	}); err != nil {
		return err
	}
	// Replica j of master i is node masters*(1+j)+i.
	for i := masters; i < len(nodes); i++ {
		master := nodes[i%masters]
		if err := retryFor(ctx, func(ctx context.Context) error {
			return c.nodeDo(ctx, nodes[i].addr(), func(b rueidis.Builder) rueidis.Completed {
				return b.ClusterReplicate().NodeId(master.id).Build()
			}).Error()
		}); err != nil {
			return fmt.Errorf("node %s: replicate %s: %w", nodes[i].addr(), master.addr(), err)
		}
	}
	return c.waitHealthy(ctx, masters, masters*replicas)
}

// spawn starts one redis-server on free ports, and returns once it answers.
func (c *Cluster) spawn(ctx context.Context, server string, n *node) error {
	var err error
	if n.port, err = freePort(); err != nil {
		return err
	}
	if n.bus, err = freePort(); err != nil {
		return err
	}
	p := strconv.Itoa(n.port)
	//nolint:gosec // G204: the test harness runs the redis-server it was told to
	cmd := exec.Command(server,
		"--port", p, "--cluster-port", strconv.Itoa(n.bus), "--bind", loopback.String(),
		"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(c.dir, "nodes-"+p+".conf"),
		// Redis's default node timeout (15 s): a shorter one lets a node
		// starved of CPU on a busy machine be voted failed, a failover the
		// test did not ask for. CLUSTER FAILOVER does not wait for it.
		"--cluster-node-timeout", "15000",
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
		"--dir", c.dir, "--logfile", filepath.Join(c.dir, "redis-"+p+".log"))
	// The nodes die with the test binary, should it die before Terminate.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", server, err)
	}
	c.procs = append(c.procs, cmd)
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	if err := retry(ctx, func(ctx context.Context) error {
		return c.nodeDo(ctx, n.addr(), func(b rueidis.Builder) rueidis.Completed { return b.Ping().Build() }).Error()
	}); err != nil {
		return fmt.Errorf("redis-server on %s never answered (log: %s): %w", n.addr(), filepath.Join(c.dir, "redis-"+p+".log"), err)
	}
	return nil
}

// Terminate stops the cluster's processes and removes their files. For a
// ready cluster it does nothing.
func (c *Cluster) Terminate(context.Context) error {
	var errs []error
	for _, p := range c.procs {
		_ = p.Process.Kill()
		_ = p.Wait() // killed: its error says so
	}
	c.procs = nil
	if c.dir != "" {
		errs = append(errs, os.RemoveAll(c.dir))
		c.dir = ""
	}
	return errors.Join(errs...)
}

// ClusterNode is one node as CLUSTER NODES describes it.
type ClusterNode struct {
	ID, Addr string
	Master   bool
	MasterID string // of a replica
	Slots    [][2]int
}

// Nodes returns the cluster's nodes as the node at URL sees them.
func (c *Cluster) Nodes(ctx context.Context) ([]ClusterNode, error) {
	u, err := url.Parse(c.url)
	if err != nil {
		return nil, err
	}
	out, err := c.nodeDo(ctx, u.Host, func(b rueidis.Builder) rueidis.Completed { return b.ClusterNodes().Build() }).ToString()
	if err != nil {
		return nil, fmt.Errorf("cluster nodes: %w", err)
	}
	return parseClusterNodes(out)
}

// parseClusterNodes reads CLUSTER NODES: id addr flags master ping pong
// epoch link slot...
func parseClusterNodes(out string) ([]ClusterNode, error) {
	var nodes []ClusterNode
	for line := range strings.Lines(strings.TrimSpace(out)) {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("cluster nodes: short line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := ClusterNode{ID: f[0], Addr: addr}
		if strings.Contains(f[2], "fail") && !strings.Contains(f[2], "fail?") {
			continue // gone; not a node to use
		}
		n.Master = strings.Contains(f[2], "master")
		if f[3] != "-" {
			n.MasterID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated
			}
			from, to, ok := strings.Cut(r, "-")
			if !ok {
				to = from
			}
			a, err1 := strconv.Atoi(from)
			b, err2 := strconv.Atoi(to)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("cluster nodes: slot range %q", r)
			}
			n.Slots = append(n.Slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// Failover promotes a replica of the master serving key's slot with
// CLUSTER FAILOVER (the manual, coordinated one: the replica catches up
// with its master first), and returns once the replica is the master of
// that slot and the whole cluster serves every slot again.
func (c *Cluster) Failover(ctx context.Context, key string) error {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return err
	}
	slot, err := c.nodeDo(ctx, nodes[0].Addr, func(b rueidis.Builder) rueidis.Completed { return b.ClusterKeyslot().Key(key).Build() }).AsInt64()
	if err != nil {
		return fmt.Errorf("containers: failover: cluster keyslot: %w", err)
	}
	var master *ClusterNode
	for i := range nodes {
		for _, r := range nodes[i].Slots {
			if nodes[i].Master && int64(r[0]) <= slot && slot <= int64(r[1]) {
				master = &nodes[i]
			}
		}
	}
	if master == nil {
		return fmt.Errorf("containers: failover: no master serves slot %d", slot)
	}
	var replica *ClusterNode
	for i := range nodes {
		if nodes[i].MasterID == master.ID {
			replica = &nodes[i]
			break
		}
	}
	if replica == nil {
		return fmt.Errorf("containers: failover: master %s has no replica (TEST_REDIS_CLUSTER_REPLICAS=0?)", master.Addr)
	}
	if err := c.nodeDo(ctx, replica.Addr, func(b rueidis.Builder) rueidis.Completed { return b.ClusterFailover().Build() }).Error(); err != nil {
		return fmt.Errorf("containers: failover on %s: %w", replica.Addr, err)
	}
	return retryFor(ctx, func(ctx context.Context) error {
		role, err := c.nodeDo(ctx, replica.Addr, func(b rueidis.Builder) rueidis.Completed { return b.Role().Build() }).ToArray()
		if err != nil {
			return err
		}
		if len(role) == 0 {
			return errors.New("empty ROLE reply")
		}
		if r, _ := role[0].ToString(); r != "master" {
			return fmt.Errorf("%s is still %s", replica.Addr, r)
		}
		return c.healthy(ctx, 0, 0)
	})
}

// waitHealthy waits until every node says the cluster is ok and serves
// every slot, with masters masters and replicas replicas in sync (zero:
// any number).
func (c *Cluster) waitHealthy(ctx context.Context, masters, replicas int) error {
	return retryFor(ctx, func(ctx context.Context) error { return c.healthy(ctx, masters, replicas) })
}

func (c *Cluster) healthy(ctx context.Context, masters, replicas int) error {
	nodes, err := c.Nodes(ctx)
	if err != nil {
		return err
	}
	var m, r int
	for _, n := range nodes {
		info, err := c.nodeDo(ctx, n.Addr, func(b rueidis.Builder) rueidis.Completed { return b.ClusterInfo().Build() }).ToString()
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("node %s: cluster not ok yet", n.Addr)
		}
		if n.Master {
			m++
			continue
		}
		repl, err := c.nodeDo(ctx, n.Addr, func(b rueidis.Builder) rueidis.Completed { return b.Info().Section("replication").Build() }).ToString()
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Addr, err)
		}
		if !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("replica %s: not in sync with its master yet", n.Addr)
		}
		r++
	}
	if (masters > 0 && m != masters) || (replicas > 0 && r != replicas) {
		return fmt.Errorf("%d masters and %d replicas, want %d and %d", m, r, masters, replicas)
	}
	return nil
}

// nodeDo sends one command to the node at addr alone (no cluster routing).
func (c *Cluster) nodeDo(ctx context.Context, addr string, cmd func(rueidis.Builder) rueidis.Completed) rueidis.RedisResult {
	rc, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		Username:          c.auth.Username,
		Password:          c.auth.Password,
		TLSConfig:         c.auth.TLSConfig,
		ForceSingleClient: true,
		DisableCache:      true,
		DisableRetry:      true,
		Dialer:            net.Dialer{Timeout: 2 * time.Second},
	})
	if err != nil {
		return rueidis.NewErrorResult(err)
	}
	defer rc.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return rc.Do(ctx, cmd(rc.B()))
}

// retryFor retries try for up to startupTimeout.
func retryFor(ctx context.Context, try func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	return retry(ctx, try)
}

func envInt(name string, fallback, lo, hi int) (int, error) {
	v := os.Getenv(name)
	if v == "" {
		return fallback, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("containers: %s=%q: want a whole number from %d to %d", name, v, lo, hi)
	}
	return n, nil
}

// redactURL hides a password in u for the log.
func redactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	return p.Redacted()
}

// clusterURLNotice logs once per test binary that a ready cluster is used.
var clusterURLNotice sync.Once
