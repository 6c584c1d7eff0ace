package redis

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/rueidis"

	"github.com/wsserver/wsserver/ports"
)

var _ ports.PresenceReaper = (*Presence)(nil)

// registryKey is the set of the tokens of the instances that keep
// presence: each adds itself at every heartbeat.
func registryKey(prefix string) string { return prefix + keyInstances }

// sessionsKey is the set of the sessions an instance has entries on. Its
// hash tag is the instance's token: it belongs to no session.
func sessionsKey(prefix, token string) string { return tagged(prefix, kindInstanceSessions, token) }

// reapingKey claims a dead instance for one reaper.
func reapingKey(prefix, token string) string { return tagged(prefix, kindReaping, token) }

// Reap finds the instances of the registry whose liveness key expired and
// claims each with SET NX on a claim key of its own: Redis runs it once,
// so exactly one caller, on one instance, takes it. The claimer removes
// the dead instance's entries, returns them by session and only then takes
// it out of the registry. So an instance that was only cut off, and is back
// in the registry at its next beat, writes its entries again after they
// were removed, never before. A claimer that dies on the way leaves the
// rest to whoever claims once the claim key expires (after TTL); List
// leaves the entries out meanwhile.
func (p *Presence) Reap(ctx context.Context) (map[string][]ports.Member, error) {
	c := p.cfg.Client
	tokens, err := c.Do(ctx, c.B().Smembers().Key(registryKey(p.cfg.Prefix)).Build()).AsStrSlice()
	if err != nil {
		p.cfg.OnError("presence_reap")
		return nil, fmt.Errorf("redis: presence reap: %w", err)
	}
	others := make([]string, 0, len(tokens))
	cmds := make(rueidis.Commands, 0, len(tokens))
	for _, tok := range tokens {
		if tok != p.token {
			others = append(others, tok)
			cmds = append(cmds, c.B().Exists().Key(p.cfg.Prefix+"instance:"+tok).Build())
		}
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	var dead []string
	for i, r := range c.DoMulti(ctx, cmds...) {
		n, err := r.AsInt64()
		if err != nil {
			p.cfg.OnError("presence_reap")
			return nil, fmt.Errorf("redis: presence reap: %w", err)
		}
		if n == 0 {
			dead = append(dead, others[i])
		}
	}
	var lost map[string][]ports.Member
	for _, tok := range dead {
		err := c.Do(ctx, c.B().Set().Key(reapingKey(p.cfg.Prefix, tok)).Value(p.token).Nx().PxMilliseconds(p.cfg.TTL.Milliseconds()).Build()).Error()
		if rueidis.IsRedisNil(err) {
			continue // another instance claimed it
		}
		if err == nil {
			if lost == nil {
				lost = make(map[string][]ports.Member)
			}
			err = p.reapOne(ctx, tok, lost)
		}
		if err != nil {
			p.cfg.OnError("presence_reap")
			return lost, fmt.Errorf("redis: presence reap: %w", err)
		}
	}
	return lost, nil
}

// reapOne removes the entries of the dead instance tok, adding them to lost.
func (p *Presence) reapOne(ctx context.Context, tok string, lost map[string][]ports.Member) error {
	c := p.cfg.Client
	skey := sessionsKey(p.cfg.Prefix, tok)
	sessions, err := c.Do(ctx, c.B().Smembers().Key(skey).Build()).AsStrSlice()
	if err != nil {
		return err
	}
	for _, session := range sessions {
		key := p.key(session)
		fields, err := c.Do(ctx, c.B().Hgetall().Key(key).Build()).AsStrMap()
		if err != nil {
			return err
		}
		var conns []string
		for conn, raw := range fields {
			var e entry
			if json.Unmarshal([]byte(raw), &e) != nil || e.Instance != tok {
				continue
			}
			conns = append(conns, conn)
			lost[session] = append(lost[session], ports.Member{ConnectionID: conn, UserType: e.UserType, ClientType: e.ClientType, PresenceKey: e.Key})
		}
		if len(conns) > 0 {
			if err := c.Do(ctx, c.B().Hdel().Key(key).Field(conns...).Build()).Error(); err != nil {
				return err
			}
		}
	}
	for _, r := range c.DoMulti(ctx,
		c.B().Del().Key(skey).Build(),
		c.B().Srem().Key(registryKey(p.cfg.Prefix)).Member(tok).Build(),
	) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}
