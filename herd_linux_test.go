package prefork_test

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// With eight idle children on one listener, each connection should wake one
// child. A child that wakes and finds no connection counts a spurious
// wake-up and logs the count when it exits; with Go's netpoller on the
// shared socket every idle child would wake for every connection, about
// seven spurious wake-ups per connection here.
func TestOneChildWakesPerConnection(t *testing.T) {
	t.Parallel()
	const connections = 40
	p := startReady(t, helperConfig{Min: 8, Max: 8, MinSpare: 1, MaxSpare: 8})
	for range connections {
		c := p.dial()
		assert.Equal(t, "x", c.ask("x"))
		c.conn.Close()
	}
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())

	exits := p.childExits(t)
	spurious := 0
	for _, e := range exits {
		spurious += e.Spurious
	}
	require.Len(t, exits, 8)
	t.Logf("%d spurious wake-ups for %d connections across 8 idle children", spurious, connections)
	assert.LessOrEqual(t, spurious, connections/4)
}
