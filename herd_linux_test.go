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

	f, err := os.Open(p.log)
	require.NoError(t, err)
	defer f.Close()
	spurious, exits := 0, 0
	for lines := bufio.NewScanner(f); lines.Scan(); {
		var rec struct {
			Msg      string
			Spurious int `json:"spurious_wakeups"`
		}
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec.Msg == "prefork: child exiting" {
			spurious += rec.Spurious
			exits++
		}
	}
	require.Equal(t, 8, exits)
	t.Logf("%d spurious wake-ups for %d connections across 8 idle children", spurious, connections)
	assert.LessOrEqual(t, spurious, connections/4)
}
