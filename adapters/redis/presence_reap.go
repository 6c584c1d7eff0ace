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
func registryKey(prefix string) string { return prefix + "instances" }

// sessionsKey is the set of the sessions an instance has entries on. Its
// hash tag is the instance's token: it belongs to no session.
func sessionsKey(prefix, token string) string { return prefix + "instance-sessions:{" + token + "}" }

// Reap finds the instances of the registry whose liveness key expired,
// claims each with SREM on the registry — Redis runs it once, so exactly
// one caller, on one instance, gets 1 back — and for each one claimed
// removes its entries and returns them by session. An instance that
// claimed and then failed before removing them leaves them to expire with
// their hashes; List leaves them out already.
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
		n, err := c.Do(ctx, c.B().Srem().Key(registryKey(p.cfg.Prefix)).Member(tok).Build()).AsInt64()
		if err != nil {
			p.cfg.OnError("presence_reap")
			return lost, fmt.Errorf("redis: presence reap: %w", err)
		}
		if n == 0 {
			continue // another instance claimed it
		}
		if lost == nil {
			lost = make(map[string][]ports.Member)
		}
		if err := p.reapOne(ctx, tok, lost); err != nil {
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
	return c.Do(ctx, c.B().Del().Key(skey).Build()).Error()
}
