package prefork_test

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A child that runs no goroutines but its own waits while holding its P
// (see How it works in the README); it counts such waits and logs the
// count when it exits. Without them the children would cost about twice
// the CPU per request, which no other test would notice. A program that
// called signal.Notify before Run (os/signal's watcher goroutine is then
// the program's) does not lose them.
func TestChildWaitsHoldTheP(t *testing.T) {
	t.Parallel()
	for name, notifyBeforeRun := range map[string]bool{"plain": false, "after a Notify before Run": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const lines = 30
			p := startReady(t, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, NotifyBeforeRun: notifyBeforeRun})
			c := p.dial()
			for range lines {
				assert.Equal(t, "x", c.ask("x"))
			}
			c.conn.Close()
			p.signal(syscall.SIGTERM)
			require.NoError(t, p.wait())

			exits := p.childExits(t)
			require.Len(t, exits, 1)
			assert.GreaterOrEqual(t, exits[0].Held, lines, "each line is waited for while holding the P")
		})
	}
}

// A request that serves its connection from a goroutine of its own (as
// net/http does) keeps the waits that hold the P when it declares that
// goroutine with ConnGoroutines, and loses them when it does not.
func TestConnGoroutinesKeepTheWaitsThatHoldTheP(t *testing.T) {
	t.Parallel()
	for name, declared := range map[string]bool{"declared": true, "undeclared": false} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const lines = 30
			cfg := helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, ConnGoroutine: 1}
			if declared {
				cfg.ConnGoroutine = 2
			}
			p := startReady(t, cfg)
			c := p.dial()
			for range lines {
				assert.Equal(t, "x", c.ask("x"))
			}
			c.conn.Close()
			p.signal(syscall.SIGTERM)
			require.NoError(t, p.wait())

			exits := p.childExits(t)
			require.Len(t, exits, 1)
			if declared {
				assert.GreaterOrEqual(t, exits[0].Held, lines, "each line is waited for while holding the P")
			} else {
				assert.Less(t, exits[0].Held, lines/2, "an undeclared goroutine turns the waits into ordinary ones")
			}
		})
	}
}
