package prefork_test

import (
	"context"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// During DrainDelay a stopping pool goes on serving new connections; then
// it stops as ever.
func TestDrainDelayServesOnBeforeTheStop(t *testing.T) {
	const delay = 2 * time.Second // for a look at Stats and two clients, on a loaded machine
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m, p, wait := runMasterHere(t, ctx, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1}, func(m *prefork.Manager) {
		m.DrainDelay = delay
	})
	pid := p.askPID()
	stopped := time.Now()
	cancel()
	eventually(t, m, "stopping", func(s prefork.Stats) bool { return s.Stopping })

	// A client that comes during the drain is served.
	c := p.dial()
	assert.Equal(t, "x", c.ask("x"))
	c.conn.Close()
	assert.Equal(t, pid, p.askPID(), "the same child serves on")

	require.NoError(t, wait())
	assert.GreaterOrEqual(t, time.Since(stopped), delay, "Run returned before the drain was over")
}
