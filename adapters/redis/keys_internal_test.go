package redis

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

// A session channel's name gives back its session, whatever bytes the id
// holds, and another prefix's channel gives nothing.
func TestSessionOfItsChannel(t *testing.T) {
	b := &Broker{cfg: BrokerConfig{Prefix: "ws:"}}
	for _, session := range []string{"s1", "", "a}b", "{x}", "a:b{c"} {
		ch := b.channel(session)
		assert.Equal(t, "ws:session:{"+session+"}", ch)
		got, ok := b.sessionOf(ch)
		assert.True(t, ok, ch)
		assert.Equal(t, session, got, ch)
	}
	for _, ch := range []string{"other:session:{s}", "ws:session:s", "ws:session:{s"} {
		_, ok := b.sessionOf(ch)
		assert.False(t, ok, ch)
	}
}

// A session's other channels ("<id>/<more>", presence events) sit in the
// session's slot, and give back their names.
func TestSessionOfItsOtherChannels(t *testing.T) {
	b := &Broker{cfg: BrokerConfig{Prefix: "ws:"}}
	for name, want := range map[string]string{
		"s1/presence": "ws:session:{s1}:presence",
		"a:b.c/x":     "ws:session:{a:b.c}:x",
		"room-12/p/q": "ws:session:{room-12}:p/q",
	} {
		ch := b.channel(name)
		assert.Equal(t, want, ch)
		got, ok := b.sessionOf(ch)
		assert.True(t, ok, ch)
		assert.Equal(t, name, got, ch)
	}
}

// ChannelOf names the channel a broker so configured uses.
func TestChannelOf(t *testing.T) {
	for _, partitions := range []int{0, 1, 7, 16} {
		b := &Broker{cfg: BrokerConfig{Prefix: "p:", Partitions: partitions}, links: make([]*link, max(partitions, 1))}
		for _, session := range []string{"s1", "s2", "a}b", "", "s1/presence"} {
			_, ch := b.route(session)
			assert.Equal(t, ch, ChannelOf("p:", partitions, session))
		}
	}
	assert.Equal(t, "ws:session:{s}", ChannelOf("", 0, "s"))
}
