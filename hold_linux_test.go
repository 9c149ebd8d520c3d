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
// the program's) does not lose them; a request that serves its connection
// from a goroutine of its own (as net/http does) keeps them when it
// declares that goroutine with ConnGoroutines, and loses them when it does
// not.
func TestChildWaitsHoldTheP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		cfg  helperConfig
		hold bool
	}{
		{"plain", helperConfig{}, true},
		{"after a Notify before Run", helperConfig{NotifyBeforeRun: true}, true},
		{"a declared connection goroutine", helperConfig{ConnGoroutine: 2}, true},
		{"an undeclared connection goroutine", helperConfig{ConnGoroutine: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const lines = 30
			cfg := tc.cfg
			cfg.Min, cfg.Max, cfg.MinSpare, cfg.MaxSpare = 1, 1, 1, 1
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
			if tc.hold {
				// A new child waits the ordinary way until a wait shows
				// that work comes quickly: its wait for the connection,
				// and at most the wait for the first line.
				assert.GreaterOrEqual(t, exits[0].Held, lines-2, "each line after the first is waited for while holding the P")
			} else {
				assert.Less(t, exits[0].Held, lines/2, "an undeclared goroutine turns the waits into ordinary ones")
			}
		})
	}
}
