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

// NewAnswersHeld is NewAnswers whose followers' subscriptions are made
// only once release is called (which must be, before Close): a test
// appends between a follower's read and its subscription.
func NewAnswersHeld(cfg AnswersConfig) (a *Answers, release func(), err error) {
	a, err = NewAnswers(cfg)
	if err != nil {
		return nil, nil, err
	}
	a.subs.close()
	a.subs = idleSubscriber(a.cfg.Client, a.cfg.OnError, "answer_subscribe", a.cfg.Log)
	return a, a.subs.start, nil
}

// Subscriptions counts the answers' channels subscribed or wanted.
func (a *Answers) Subscriptions() int { return a.subs.channels() }
