package prefork_test

import (
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Children that the board calls idle but that take nothing (stopped, here)
// must not strand connections: the master notices that connections wait
// while they take none, and starts others.
func TestStoppedChildrenDoNotStrandConnections(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 4, Max: 8, MinSpare: 1, MaxSpare: 4})
	p.waitFor("four children", func() bool { return len(p.children()) == 4 })

	first, second := p.dial(), p.dial()
	held := []int{atoi(t, first.ask("pid")), atoi(t, second.ask("pid"))}
	var stopped []int
	for _, pid := range p.children() {
		if !slices.Contains(held, pid) {
			require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
			stopped = append(stopped, pid)
		}
	}
	require.Len(t, stopped, 2)
	t.Cleanup(func() {
		for _, pid := range stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	p.waitFor("the two idle children to stop", func() bool {
		return processState(stopped[0]) == 'T' && processState(stopped[1]) == 'T'
	})

	third := p.dial()
	start := time.Now()
	pid := atoi(t, third.ask("pid"))
	t.Logf("served after %v", time.Since(start).Round(time.Millisecond))
	assert.NotContains(t, append(held, stopped...), pid, "a new child serves it")
}

// With every child held, the pool starts MinSpareServers spares (parked, on
// Linux: out of the listener's queue until connections wait), and a new
// client is served by one of them rather than by a child started for it.
func TestSparesServeWhenEveryChildIsHeld(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 8, MinSpare: 2, MaxSpare: 4})
	first, second := p.dial(), p.dial()
	held := []int{atoi(t, first.ask("pid")), atoi(t, second.ask("pid"))}
	p.waitFor("two spares besides the two held children", func() bool { return len(p.children()) == 4 })
	spares := slices.DeleteFunc(p.children(), func(pid int) bool { return slices.Contains(held, pid) })
	// A spare still starting takes nothing, so under load the master
	// rightly starts another for the third client; spares are for later.
	p.waitFor("the spares to be ready", func() bool { return p.masterSawReady(spares...) })

	third := p.dial()
	pid := atoi(t, third.ask("pid"))
	assert.Contains(t, spares, pid, "a spare serves it")
}

// processState is the state letter of a process in /proc (R, S, T, ...),
// or 0 if it cannot be read.
func processState(pid int) byte {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(fields) == 0 {
		return 0
	}
	return fields[0][0]
}
