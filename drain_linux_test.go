package prefork_test

import (
	"context"
	"os"
	"path/filepath"
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

// A pool that stops before it was ever ready was never in rotation: it
// stops at once, without DrainDelay, and never calls PostInitChildren.
func TestNoDrainBeforeThePoolIsReady(t *testing.T) {
	const delay = time.Minute
	hang := filepath.Join(t.TempDir(), "hang")
	require.NoError(t, os.WriteFile(hang, nil, 0o600)) // no child becomes ready
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, p, wait := startMasterHere(t, ctx, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, HangInitWhile: hang, ShutdownTimeout: time.Second}, func(m *prefork.Manager) {
		m.DrainDelay = delay
	})
	p.waitEvent("child", "Initialize")
	cancel()
	require.NoError(t, wait(), "Run returns within waitLimit, not after DrainDelay")
	for _, ev := range p.readEvents() {
		assert.NotEqual(t, "PostInitChildren", ev.Hook)
	}
}
