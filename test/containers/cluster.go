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
	"slices"
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
	url      string
	auth     rueidis.ClientOption // the URL's credentials, for each node
	dir      string               // the nodes' files; empty for a ready cluster
	replicas int                  // per master, as started; -1 for a ready cluster
	procs    []*exec.Cmd
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
		c := &Cluster{url: ready, auth: opt, replicas: -1}
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
	c := &Cluster{dir: dir, replicas: replicas}
	if err := c.create(ctx, server, masters, replicas); err != nil {
		return nil, errors.Join(fmt.Errorf("containers: start cluster: %w%s", err, c.logTails()), c.Terminate(ctx))
	}
	return c, nil
}

// URL returns a redis:// URL of one master; clients find the others.
func (c *Cluster) URL() string { return c.url }

// addr is the host:port of URL, the node whose view Nodes reads.
func (c *Cluster) addr() string {
	u, err := url.Parse(c.url)
	if err != nil {
		return c.url // rueidis parsed it already: not reached
	}
	return u.Host
}

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
			out, err := c.clusterNodes(ctx, n.addr())
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
	return c.waitHealthy(ctx, masters, replicas)
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

	flags []string // as listed: myself, master, slave, fail?, fail, handshake...
}

// failed says whether the view takes the node for gone (flag fail).
func (n ClusterNode) failed() bool { return slices.Contains(n.flags, "fail") }

// unsettled names the flag that says the view of n is not settled yet: a
// node failed or suspected, in a handshake or without an address; or "".
func (n ClusterNode) unsettled() string {
	for _, f := range n.flags {
		switch f {
		case "fail", "fail?", "handshake", "noaddr":
			return f
		}
	}
	return ""
}

// Nodes returns the cluster's nodes as the node at URL sees them, less the
// ones it takes for failed.
func (c *Cluster) Nodes(ctx context.Context) ([]ClusterNode, error) {
	out, err := c.clusterNodes(ctx, c.addr())
	if err != nil {
		return nil, err
	}
	nodes, err := parseClusterNodes(out)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(nodes, ClusterNode.failed), nil
}

// clusterNodes returns CLUSTER NODES as the node at addr answers it.
func (c *Cluster) clusterNodes(ctx context.Context, addr string) (string, error) {
	out, err := text(c.nodeDo(ctx, addr, func(b rueidis.Builder) rueidis.Completed { return b.ClusterNodes().Build() }))
	if err != nil {
		return "", fmt.Errorf("node %s: cluster nodes: %w", addr, err)
	}
	return out, nil
}

// text reads the reply of a command that answers text for people (CLUSTER
// NODES, CLUSTER INFO, INFO). On RESP3, which rueidis speaks, that is a
// verbatim string, and rueidis leaves its format, "txt:", in front of the
// text: read as it comes, the first node of CLUSTER NODES had the id
// "txt:<id>", which no replica names as its master.
func text(r rueidis.RedisResult) (string, error) {
	s, err := r.ToString()
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(s, "txt:"), nil
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
		if !isNodeID(f[0]) || (f[3] != "-" && !isNodeID(f[3])) {
			return nil, fmt.Errorf("cluster nodes: not a node id in %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := ClusterNode{ID: f[0], Addr: addr, flags: strings.Split(f[2], ",")}
		n.Master = slices.Contains(n.flags, "master")
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

// isNodeID says whether s is a cluster node id: 40 hexadecimal digits.
func isNodeID(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, r := range s {
		if !strings.ContainsRune("0123456789abcdef", r) {
			return false
		}
	}
	return true
}

// shape is what a view says of the cluster, one line per node in id
// order: its address and role, the slots of a master, the master of a
// replica. Two nodes agree on the cluster when their views' shapes are
// equal.
func shape(nodes []ClusterNode) string {
	lines := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if n.Master {
			lines = append(lines, fmt.Sprintf("%s %s master of %v", n.ID, n.Addr, n.Slots))
		} else {
			lines = append(lines, fmt.Sprintf("%s %s replica of %q", n.ID, n.Addr, n.MasterID))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// slotOwner returns the master that serves slot in nodes, and one of its
// replicas.
func slotOwner(nodes []ClusterNode, slot int64) (master, replica *ClusterNode, err error) {
	for i := range nodes {
		for _, r := range nodes[i].Slots {
			if nodes[i].Master && int64(r[0]) <= slot && slot <= int64(r[1]) {
				master = &nodes[i]
			}
		}
	}
	if master == nil {
		return nil, nil, fmt.Errorf("no master serves slot %d", slot)
	}
	for i := range nodes {
		if nodes[i].MasterID == master.ID {
			return master, &nodes[i], nil
		}
	}
	return master, nil, fmt.Errorf("master %s of slot %d has no replica", master.Addr, slot)
}

// manualFailoverTimeout is how long a replica is given to become master
// after CLUSTER FAILOVER before it is asked again: Redis gives up a manual
// failover its master did not agree to within 5 s, without a word to the
// client, which a starved node on a busy machine can miss.
const manualFailoverTimeout = 10 * time.Second

// Failover promotes a replica of the master serving key's slot with
// CLUSTER FAILOVER (the manual, coordinated one: the replica catches up
// with its master first), and returns once the replica is the master of
// that slot and every node sees the cluster so, with every slot served.
// It waits for the view at URL to show the slot's master with a replica
// in sync, and says what that view was when it never did.
func (c *Cluster) Failover(ctx context.Context, key string) error {
	if c.replicas == 0 {
		return errors.New("containers: failover: the cluster has no replicas (TEST_REDIS_CLUSTER_REPLICAS=0)")
	}
	slot, err := c.nodeDo(ctx, c.addr(), func(b rueidis.Builder) rueidis.Completed { return b.ClusterKeyslot().Key(key).Build() }).AsInt64()
	if err != nil {
		return fmt.Errorf("containers: failover: cluster keyslot: %w", err)
	}
	var replica *ClusterNode
	var seen string
	if err := retryFor(ctx, func(ctx context.Context) error {
		out, err := c.clusterNodes(ctx, c.addr())
		if err != nil {
			return err
		}
		seen = out
		nodes, err := parseClusterNodes(out)
		if err != nil {
			return err
		}
		if _, replica, err = slotOwner(slices.DeleteFunc(nodes, ClusterNode.failed), slot); err != nil {
			return err
		}
		return c.inSync(ctx, replica.Addr)
	}); err != nil {
		return fmt.Errorf("containers: failover of slot %d: %w\nCLUSTER NODES on %s:\n%s%s", slot, err, c.addr(), seen, c.logTails())
	}
	failover := func(ctx context.Context) error {
		if err := c.nodeDo(ctx, replica.Addr, func(b rueidis.Builder) rueidis.Completed { return b.ClusterFailover().Build() }).Error(); err != nil {
			return fmt.Errorf("containers: failover on %s: %w", replica.Addr, err)
		}
		return nil
	}
	if err := failover(ctx); err != nil {
		return err
	}
	asked := time.Now()
	if err := retryFor(ctx, func(ctx context.Context) error {
		role, err := c.nodeDo(ctx, replica.Addr, func(b rueidis.Builder) rueidis.Completed { return b.Role().Build() }).ToArray()
		if err != nil {
			return err
		}
		if len(role) == 0 {
			return errors.New("empty ROLE reply")
		}
		if r, _ := role[0].ToString(); r != "master" {
			if time.Since(asked) > manualFailoverTimeout {
				asked = time.Now()
				if err := failover(ctx); err != nil {
					return err
				}
			}
			return fmt.Errorf("%s is still %s", replica.Addr, r)
		}
		return c.healthy(ctx, 0, 0)
	}); err != nil {
		return fmt.Errorf("containers: failover of slot %d to %s: %w%s", slot, replica.Addr, err, c.logTails())
	}
	return nil
}

// waitHealthy waits until the cluster is healthy (see healthy).
func (c *Cluster) waitHealthy(ctx context.Context, masters, replicas int) error {
	return retryFor(ctx, func(ctx context.Context) error { return c.healthy(ctx, masters, replicas) })
}

// healthy says why the cluster is not yet settled, or nil once it is:
// every node says the cluster is ok and serves every slot; every node's
// view has the shape of the view at URL, with no node failed, suspected
// or in a handshake; every replica is in sync with its master; and, when
// masters is not zero, there are masters masters with slots, each with
// replicas replicas.
func (c *Cluster) healthy(ctx context.Context, masters, replicas int) error {
	out, err := c.clusterNodes(ctx, c.addr())
	if err != nil {
		return err
	}
	nodes, err := parseClusterNodes(out)
	if err != nil {
		return err
	}
	want := shape(nodes)
	for _, n := range nodes {
		info, err := text(c.nodeDo(ctx, n.Addr, func(b rueidis.Builder) rueidis.Completed { return b.ClusterInfo().Build() }))
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Addr, err)
		}
		if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
			return fmt.Errorf("node %s: cluster not ok yet", n.Addr)
		}
		view, err := c.clusterNodes(ctx, n.Addr)
		if err != nil {
			return err
		}
		theirs, err := parseClusterNodes(view)
		if err != nil {
			return err
		}
		for _, o := range theirs {
			if flag := o.unsettled(); flag != "" {
				return fmt.Errorf("node %s sees %s as %s", n.Addr, o.Addr, flag)
			}
		}
		if shape(theirs) != want {
			return fmt.Errorf("node %s does not see the cluster as %s does yet:\n%s", n.Addr, c.addr(), view)
		}
		if !n.Master {
			if err := c.inSync(ctx, n.Addr); err != nil {
				return err
			}
		}
	}
	if masters == 0 {
		return nil
	}
	var m int
	for _, n := range nodes {
		if !n.Master || len(n.Slots) == 0 {
			continue
		}
		m++
		var r int
		for _, o := range nodes {
			if o.MasterID == n.ID {
				r++
			}
		}
		if r != replicas {
			return fmt.Errorf("master %s has %d replicas, want %d", n.Addr, r, replicas)
		}
	}
	if m != masters {
		return fmt.Errorf("%d masters serve slots, want %d", m, masters)
	}
	return nil
}

// inSync says why the replica at addr is not in sync with its master, or nil.
func (c *Cluster) inSync(ctx context.Context, addr string) error {
	repl, err := text(c.nodeDo(ctx, addr, func(b rueidis.Builder) rueidis.Completed { return b.Info().Section("replication").Build() }))
	if err != nil {
		return fmt.Errorf("node %s: %w", addr, err)
	}
	if !strings.Contains(repl, "master_link_status:up") {
		return fmt.Errorf("replica %s: not in sync with its master yet", addr)
	}
	return nil
}

// logTails returns the last lines of each node's log, for an error about
// the cluster: Terminate removes the logs, and a failure on a CI machine
// is read from its output alone. For a ready cluster it returns "".
func (c *Cluster) logTails() string {
	const n = 20
	files, err := filepath.Glob(filepath.Join(c.dir, "redis-*.log"))
	if c.dir == "" || err != nil {
		return ""
	}
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f) //nolint:gosec // G304: the harness's own log
		if err != nil {
			fmt.Fprintf(&b, "\n== %s: %v", f, err)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		fmt.Fprintf(&b, "\n== %s, its last %d lines:\n%s", f, n, strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return b.String()
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
