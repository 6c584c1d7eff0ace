package redis

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestEchoes(t *testing.T) {
	var e echoes
	// Succeeded: its echo, before or after, is delivered.
	e.publishing(1)
	assert.True(t, e.echo(1))
	assert.True(t, e.published(1, true), "its echo was seen")
	assert.True(t, e.echo(1), "a late echo of a success")
	// Failed after its echo: reported as reached, nothing remembered.
	e.publishing(2)
	assert.True(t, e.echo(2))
	assert.True(t, e.published(2, false))
	assert.Empty(t, e.failed)
	// Failed before its echo: the echo is dropped, once.
	e.publishing(3)
	assert.False(t, e.published(3, false))
	assert.False(t, e.echo(3))
	assert.True(t, e.echo(3), "forgotten once dropped")
	assert.Empty(t, e.inFlight)
}

func TestEchoesAreBounded(t *testing.T) {
	var e echoes
	const n = 3 * maxFailed
	for seq := uint64(1); seq <= n; seq++ {
		e.publishing(seq)
		e.published(seq, false) // Redis away: no echo ever comes
	}
	assert.Len(t, e.failed, maxFailed)
	assert.Empty(t, e.inFlight)
	assert.False(t, e.echo(n), "the newest failure is remembered")
	assert.True(t, e.echo(1), "the oldest was forgotten")
}
