package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.Presence = (*Presence)(nil)

// DefaultPresenceTTL is PresenceConfig.TTL's default and PRESENCE_TTL's.
const DefaultPresenceTTL = 30 * time.Second

// PresenceConfig configures a Presence.
type PresenceConfig struct {
	// Client is the shared Redis client. Required.
	Client rueidis.Client
	// Prefix is put before every key; empty means "ws:". It must not
	// contain a brace.
	Prefix string
	// InstanceID names this instance in Redis. Required.
	InstanceID string
	// TTL is how long the entries of an instance that died without goodbye
	// stay visible. Zero means 30 seconds.
	TTL time.Duration
	// OnError is told the operation of every failed Redis call (metrics).
	OnError func(op string)
	Log     *slog.Logger
}

// Presence keeps each session's connections in a Redis hash, one field per
// connection naming the instance that holds it. Every instance refreshes
// one liveness key of its own; List leaves out (and deletes) the entries of
// instances whose key has expired. So a crashed instance's connections
// vanish within TTL at the cost of one write per instance, not one per
// connection. When Redis loses its data or a write fails, the instance
// writes its connections again on the next beat.
type Presence struct {
	cfg      PresenceConfig
	token    string // this process: instance id plus a boot nonce
	aliveKey string
	// sessionsKey holds the sessions this instance has entries on, for
	// whoever reaps it (presence_reap.go).
	sessionsKey string
	beat        time.Duration
	stop        context.CancelFunc
	done        chan struct{}

	// writes keeps a full rewrite from racing with single writes: a
	// rewrite must not bring back a connection removed while it ran.
	writes sync.RWMutex

	registered atomic.Bool // a heartbeat put this instance in the registry

	mu      sync.Mutex
	local   map[string]map[string]string // session → connection → encoded entry
	removed map[string][]string          // removals that failed, to retry
	dirty   bool                         // a write failed: write everything again
}

type entry struct {
	Instance   string `json:"i"`
	UserType   string `json:"u"`
	ClientType string `json:"c,omitempty"`
	Key        string `json:"k,omitempty"`
}

// NewPresence starts a presence store; its heartbeat runs until Close.
func NewPresence(cfg PresenceConfig) (*Presence, error) {
	if cfg.Client == nil {
		return nil, errors.New("redis: presence needs a client")
	}
	if cfg.InstanceID == "" {
		return nil, errors.New("redis: presence needs an instance id")
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultPresenceTTL
	}
	if cfg.TTL < 3*time.Millisecond {
		return nil, errors.New("redis: presence ttl is too short")
	}
	prefix, err := checkPrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	cfg.Prefix = prefix
	if cfg.OnError == nil {
		cfg.OnError = func(string) {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	nonce := make([]byte, 6)
	_, _ = rand.Read(nonce) // never fails
	token := cfg.InstanceID + "/" + hex.EncodeToString(nonce)
	ctx, stop := context.WithCancel(context.Background())
	p := &Presence{
		cfg:         cfg,
		token:       token,
		aliveKey:    cfg.Prefix + "instance:" + token,
		sessionsKey: sessionsKey(cfg.Prefix, token),
		beat:        cfg.TTL / 3,
		stop:        stop,
		done:        make(chan struct{}),
		local:       make(map[string]map[string]string),
		removed:     make(map[string][]string),
	}
	if err := p.heartbeat(ctx); err != nil {
		cfg.Log.WarnContext(ctx, "redis presence: first heartbeat failed; retrying", "err", err)
	}
	go p.run(ctx)
	return p, nil
}

// Close stops the heartbeat. The entries stay until removed or expired.
func (p *Presence) Close() {
	p.stop()
	<-p.done
}

func (p *Presence) key(session string) string { return tagged(p.cfg.Prefix, kindPresence, session) }

// Add records m on session.
func (p *Presence) Add(ctx context.Context, session string, m ports.Member) error {
	raw, err := json.Marshal(entry{Instance: p.token, UserType: m.UserType, ClientType: m.ClientType, Key: m.PresenceKey})
	if err != nil {
		return fmt.Errorf("redis: presence add: %w", err)
	}
	val := string(raw)
	p.writes.RLock()
	defer p.writes.RUnlock()
	p.mu.Lock()
	s := p.local[session]
	if s == nil {
		s = make(map[string]string)
		p.local[session] = s
	}
	s[m.ConnectionID] = val
	p.mu.Unlock()

	c := p.cfg.Client
	key := p.key(session)
	for _, r := range c.DoMulti(ctx,
		c.B().Hset().Key(key).FieldValue().FieldValue(m.ConnectionID, val).Build(),
		c.B().Pexpire().Key(key).Milliseconds(p.keyTTL()).Build(),
		c.B().Sadd().Key(p.sessionsKey).Member(session).Build(),
		c.B().Pexpire().Key(p.sessionsKey).Milliseconds(p.keyTTL()).Build(),
	) {
		if err := r.Error(); err != nil {
			p.failed("presence_add")
			return fmt.Errorf("redis: presence add: %w", err)
		}
	}
	return nil
}

// Remove forgets connID on session.
func (p *Presence) Remove(ctx context.Context, session, connID string) error {
	p.writes.RLock()
	defer p.writes.RUnlock()
	p.mu.Lock()
	last := false
	if s := p.local[session]; s != nil {
		delete(s, connID)
		if len(s) == 0 {
			delete(p.local, session)
			last = true
		}
	}
	p.mu.Unlock()

	c := p.cfg.Client
	cmds := rueidis.Commands{c.B().Hdel().Key(p.key(session)).Field(connID).Build()}
	if last {
		// Best effort: a stale name costs the reaper one look.
		cmds = append(cmds, c.B().Srem().Key(p.sessionsKey).Member(session).Build())
	}
	if err := c.DoMulti(ctx, cmds...)[0].Error(); err != nil {
		p.mu.Lock()
		p.removed[session] = append(p.removed[session], connID)
		p.mu.Unlock()
		p.failed("presence_remove")
		return fmt.Errorf("redis: presence remove: %w", err)
	}
	return nil
}

// List returns the live members of session on every instance.
func (p *Presence) List(ctx context.Context, session string) ([]ports.Member, error) {
	c := p.cfg.Client
	key := p.key(session)
	fields, err := c.Do(ctx, c.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil {
		p.cfg.OnError("presence_list")
		return nil, fmt.Errorf("redis: presence list: %w", err)
	}
	if len(fields) == 0 {
		return nil, nil
	}
	type row struct {
		conn string
		e    entry
	}
	rows := make([]row, 0, len(fields))
	instances := make(map[string]bool) // token → alive
	for conn, raw := range fields {
		var e entry
		if json.Unmarshal([]byte(raw), &e) != nil || e.Instance == "" {
			continue // not ours to read; it expires with the key
		}
		rows = append(rows, row{conn, e})
		instances[e.Instance] = false
	}
	tokens := make([]string, 0, len(instances))
	cmds := make(rueidis.Commands, 0, len(instances))
	for tok := range instances {
		tokens = append(tokens, tok)
		cmds = append(cmds, c.B().Exists().Key(p.cfg.Prefix+"instance:"+tok).Build())
	}
	for i, r := range c.DoMulti(ctx, cmds...) {
		n, err := r.AsInt64()
		if err != nil {
			p.cfg.OnError("presence_list")
			return nil, fmt.Errorf("redis: presence list: %w", err)
		}
		instances[tokens[i]] = n > 0 || tokens[i] == p.token
	}
	members := make([]ports.Member, 0, len(rows))
	for _, r := range rows {
		// A dead instance's entries are left for Reap, which removes
		// them and has their leaves announced, once.
		if instances[r.e.Instance] {
			members = append(members, ports.Member{ConnectionID: r.conn, UserType: r.e.UserType, ClientType: r.e.ClientType, PresenceKey: r.e.Key})
		}
	}
	return members, nil
}

func (p *Presence) failed(op string) {
	p.mu.Lock()
	p.dirty = true
	p.mu.Unlock()
	p.cfg.OnError(op)
}

// keyTTL keeps a session's hash for a while after its last refresh, so
// that a session whose instances all died does not stay in Redis forever.
func (p *Presence) keyTTL() int64 { return (3 * p.cfg.TTL).Milliseconds() }

func (p *Presence) run(ctx context.Context) {
	defer close(p.done)
	t := time.NewTicker(p.beat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := p.heartbeat(ctx); err != nil && ctx.Err() == nil {
				p.cfg.Log.WarnContext(ctx, "redis presence heartbeat failed", "err", err)
			}
		}
	}
}

// heartbeat renews this instance's liveness key and the keys of its
// sessions. When the liveness key was gone (Redis restarted, or the
// instance was cut off longer than TTL) or a write failed since the last
// beat, it writes every local entry again.
func (p *Presence) heartbeat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, max(p.beat, time.Second))
	defer cancel()
	c := p.cfg.Client
	beat := c.DoMulti(ctx,
		c.B().Set().Key(p.aliveKey).Value("1").Get().PxMilliseconds(p.cfg.TTL.Milliseconds()).Build(),
		c.B().Sadd().Key(registryKey(p.cfg.Prefix)).Member(p.token).Build(),
	)
	_, err := beat[0].ToString()
	gone := rueidis.IsRedisNil(err)
	if err != nil && !gone {
		p.failed("heartbeat")
		return fmt.Errorf("redis: presence heartbeat: %w", err)
	}
	added, err := beat[1].AsInt64()
	if err != nil {
		p.failed("heartbeat")
		return fmt.Errorf("redis: presence heartbeat: %w", err)
	}
	// Back in the registry after the first beat: another instance took
	// this one for dead and reaped its entries, so write them again.
	wasIn := p.registered.Swap(true)
	gone = gone || (added == 1 && wasIn)

	p.mu.Lock()
	full := gone || p.dirty
	p.mu.Unlock()
	if full {
		p.writes.Lock()
		defer p.writes.Unlock()
	}
	p.mu.Lock()
	full = full || p.dirty
	p.dirty = false
	cmds := make(rueidis.Commands, 0, 2*len(p.local)+len(p.removed))
	for session, conns := range p.local {
		key := p.key(session)
		if full {
			fv := c.B().Hset().Key(key).FieldValue()
			for conn, val := range conns {
				fv = fv.FieldValue(conn, val)
			}
			cmds = append(cmds, fv.Build())
		}
		cmds = append(cmds, c.B().Pexpire().Key(key).Milliseconds(p.keyTTL()).Build())
		if full {
			cmds = append(cmds, c.B().Sadd().Key(p.sessionsKey).Member(session).Build())
		}
	}
	if len(p.local) > 0 {
		cmds = append(cmds, c.B().Pexpire().Key(p.sessionsKey).Milliseconds(p.keyTTL()).Build())
	}
	removed := p.removed
	if full {
		p.removed = make(map[string][]string)
		for session, conns := range removed {
			cmds = append(cmds, c.B().Hdel().Key(p.key(session)).Field(conns...).Build())
		}
	}
	p.mu.Unlock()

	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			p.mu.Lock()
			p.dirty = true
			if full {
				for s, conns := range removed {
					p.removed[s] = append(p.removed[s], conns...)
				}
			}
			p.mu.Unlock()
			p.cfg.OnError("heartbeat")
			return fmt.Errorf("redis: presence heartbeat: %w", err)
		}
	}
	return nil
}
