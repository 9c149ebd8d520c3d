package prefork_test

import (
	"bufio"
	"encoding/json"
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A child that runs no goroutines but its own waits while holding its P
// (see How it works in the README); it counts such waits and logs the
// count when it exits. Without them the children would cost about twice
// the CPU per request, which no other test would notice.
func TestChildWaitsHoldTheP(t *testing.T) {
	t.Parallel()
	const lines = 30
	p := startReady(t, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	c := p.dial()
	for range lines {
		assert.Equal(t, "x", c.ask("x"))
	}
	c.conn.Close()
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())

	f, err := os.Open(p.log)
	require.NoError(t, err)
	defer f.Close()
	held, exits := 0, 0
	for scan := bufio.NewScanner(f); scan.Scan(); {
		var rec struct {
			Msg  string
			Held int `json:"held_waits"`
		}
		if json.Unmarshal(scan.Bytes(), &rec) == nil && rec.Msg == "prefork: child exiting" {
			held += rec.Held
			exits++
		}
	}
	require.Equal(t, 1, exits)
	assert.GreaterOrEqual(t, held, lines, "each line is waited for while holding the P")
}
