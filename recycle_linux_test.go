package prefork_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// readyChildren counts the children of a snapshot that take requests, or
// would once unparked.
func readyChildren(s prefork.Stats) int {
	n := 0
	for _, c := range s.Children {
		if c.State == prefork.ChildIdle || c.State == prefork.ChildBusy || c.State == prefork.ChildParked {
			n++
		}
	}
	return n
}

// watchReady samples the master's snapshots until the test ends, and
// returns a function that gives the fewest ready children seen.
func watchReady(t *testing.T, m *prefork.Manager) (fewest func() int) {
	t.Helper()
	var mu sync.Mutex
	least := readyChildren(m.Stats())
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
			n := readyChildren(m.Stats())
			mu.Lock()
			least = min(least, n)
			mu.Unlock()
		}
	})
	t.Cleanup(func() { close(done); wg.Wait() })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return least
	}
}

// exitedFor waits for the ChildExited hook to report pid's exit, and
// returns the reason it gave.
func exitedFor(p *pool, pid int) prefork.ExitReason {
	p.t.Helper()
	var reason string
	p.waitFor(fmt.Sprintf("child %d to exit", pid), func() bool {
		for _, e := range p.readEvents() {
			id, r, _ := strings.Cut(e.Detail, " ")
			if e.Hook == "ChildExited" && id == strconv.Itoa(pid) {
				reason = r
				return true
			}
		}
		return false
	})
	return prefork.ExitReason(reason)
}

// Children that have lived MaxLifetime are replaced a few at a time: a
// busy one finishes its request, no connection fails, and the pool never
// has fewer than MinServers children ready meanwhile.
func TestMaxLifetimeReplacesChildrenWithoutFailingARequest(t *testing.T) {
	m, p, _ := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 3, MaxLifetime: time.Second})
	fewest := watchReady(t, m)
	first := live()

	// A request in flight when its child's time is up.
	c := p.dial()
	pid := atoi(t, c.ask("pid"))
	assert.Equal(t, "slept", c.ask("sleep 1500ms"))
	c.conn.Close()
	assert.Equal(t, prefork.ExitMaxLifetime, exitedFor(p, pid))

	// Clients that come meanwhile are all served.
	assert.Zero(t, hammer(t, p, 2, 20, nil))
	s := eventually(t, m, "every first child replaced", func(s prefork.Stats) bool {
		for _, pid := range statsPIDs(s) {
			if slices.Contains(first, pid) {
				return false
			}
		}
		return readyChildren(s) >= 2
	})
	assert.GreaterOrEqual(t, s.Exits[prefork.ExitMaxLifetime], uint64(len(first)))
	assert.GreaterOrEqual(t, fewest(), 2, "MinServers children stay ready")
}

// A child whose memory grows past MaxChildMemory finishes its request and
// is replaced; Stats shows every child's memory.
func TestMaxChildMemoryReplacesAChildThatGrows(t *testing.T) {
	const limit = 100 << 20
	m, p, _ := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 3, MaxChildMemory: limit})
	s := eventually(t, m, "every child's memory known", func(s prefork.Stats) bool {
		return len(s.Children) >= 2 && !slices.ContainsFunc(s.Children, func(c prefork.ChildStats) bool { return c.RSS == 0 })
	})
	for _, c := range s.Children {
		assert.Less(t, c.RSS, int64(limit), "child %d", c.PID)
	}
	t.Logf("children's memory: %v", rssOf(s))

	c := p.dial()
	pid := atoi(t, c.ask("pid"))
	assert.Equal(t, "allocated", c.ask("alloc 128"))
	// The child reads its memory after a request at most once a second:
	// this request outlasts that.
	assert.Equal(t, "slept", c.ask("sleep 1100ms"))
	c.conn.Close()
	assert.Equal(t, prefork.ExitMemoryLimit, exitedFor(p, pid))
	s = eventually(t, m, "the exit counted, and the pool whole", func(s prefork.Stats) bool {
		return s.Exits[prefork.ExitMemoryLimit] == 1 && readyChildren(s) >= 2
	})
	assert.Equal(t, uint64(1), s.Exits[prefork.ExitMemoryLimit], "the others stay")
	require.NotEmpty(t, p.askNew("pid", waitLimit))
}

func rssOf(s prefork.Stats) map[int]string {
	out := map[int]string{}
	for _, c := range s.Children {
		out[c.PID] = fmt.Sprintf("%.1f MiB", float64(c.RSS)/(1<<20))
	}
	return out
}
