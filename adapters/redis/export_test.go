package redis

import "context"

// AliveInstances counts the instances of the registry whose liveness key
// is still there: a test waits for a killed instance to look dead.
func (p *Presence) AliveInstances(ctx context.Context) (int, error) {
	c := p.cfg.Client
	tokens, err := c.Do(ctx, c.B().Smembers().Key(registryKey(p.cfg.Prefix)).Build()).AsStrSlice()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, tok := range tokens {
		k, err := c.Do(ctx, c.B().Exists().Key(p.cfg.Prefix+"instance:"+tok).Build()).AsInt64()
		if err != nil {
			return 0, err
		}
		n += int(k)
	}
	return n, nil
}

// PublishScriptSource is the history's publish script, for tests that run
// it by hand.
const PublishScriptSource = publishSource
