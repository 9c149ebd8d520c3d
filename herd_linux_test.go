package prefork_test

import (
	"fmt"
	"syscall"
	"testing"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// With eight idle children, each connection should wake one child, on one
// socket or on several. A child that wakes and finds no connection counts
// a spurious wake-up and logs the count when it exits; with Go's netpoller
// on the shared socket every idle child would wake for every connection,
// about seven spurious wake-ups per connection here.
func TestOneChildWakesPerConnection(t *testing.T) {
	t.Parallel()
	const connections = 40
	for _, sockets := range []int{1, 2} {
		t.Run(fmt.Sprint(sockets, " sockets"), func(t *testing.T) {
			t.Parallel()
			cfg := helperConfig{Min: 8, Max: 8, MinSpare: 1, MaxSpare: 8}
			for range sockets {
				cfg.Sockets = append(cfg.Sockets, prefork.Socket{Addr: "127.0.0.1:0"})
			}
			p := startPoolNoWait(t, cfg)
			addrs := p.boundSockets("master", sockets)
			p.waitEvent("master", "PostInitChildren")
			for i := range connections {
				c := p.dialTo("tcp", addrs[i%sockets])
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
		})
	}
}
