package prefork

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// How due children are replaced: never below MinServers ready while there
// is room to start replacements first, a batch of MinSpareServers at a
// time, one at a time at MaxServers.
func TestReplacing(t *testing.T) {
	t.Parallel()
	cfg := config{minServers: 3, maxServers: 6, minSpare: 2}
	for name, c := range map[string]struct {
		due, leaving, finishing, ready, processes int
		cfg                                       config
		retire, start                             int
	}{
		"nothing due":                      {0, 0, 0, 3, 3, cfg, 0, 0},
		"no spare: replacements first":     {3, 0, 0, 3, 3, cfg, 0, 2},
		"one due, no spare":                {1, 0, 0, 3, 3, cfg, 0, 1},
		"replacements ready: retire":       {3, 0, 0, 5, 5, cfg, 2, 0},
		"one spare: retire one":            {3, 0, 0, 4, 4, cfg, 1, 0},
		"a batch on its way out":           {1, 2, 0, 5, 7, cfg, 0, 0},
		"half a batch on its way out":      {2, 1, 0, 5, 6, cfg, 1, 0},
		"one finishing a request: go on":   {2, 0, 1, 5, 6, cfg, 2, 0},
		"below MinServers: start":          {2, 0, 0, 2, 2, cfg, 0, 2},
		"little room":                      {3, 0, 0, 3, 5, cfg, 0, 1},
		"at MaxServers: one at a time":     {3, 0, 0, 3, 6, cfg, 1, 0},
		"at MaxServers, one leaving":       {2, 1, 0, 2, 6, cfg, 0, 0},
		"at MaxServers, one finishing":     {2, 0, 1, 2, 6, cfg, 0, 0},
		"MinSpareServers 0: one at a time": {3, 0, 0, 3, 3, config{minServers: 3, maxServers: 6}, 0, 1},
	} {
		retire, start := replacing(c.due, c.leaving, c.finishing, c.ready, c.processes, c.cfg)
		assert.Equal(t, [2]int{c.retire, c.start}, [2]int{retire, start}, name)
	}
}

// testMaster is a master with a board and no processes.
func testMaster(t *testing.T, cfg config) *master {
	t.Helper()
	b, f, err := board.Create(cfg.maxServers)
	require.NoError(t, err)
	t.Cleanup(func() { b.Close(); f.Close() })
	cfg.logger = slog.New(slog.DiscardHandler)
	ms := newMaster(t.Context(), cfg)
	ms.board, ms.slots = b, make([]bool, cfg.maxServers)
	return ms
}

// addChild gives ms a ready child in phase p, busy or idle on the board,
// started at started.
func addChild(t *testing.T, ms *master, p phase, busy bool, started time.Time) *child {
	t.Helper()
	slot := len(ms.children)
	r, w, err := os.Pipe() // what the master tells the child
	require.NoError(t, err)
	t.Cleanup(func() { r.Close(); w.Close() })
	c := &child{pid: 1000 + slot, slot: slot, status: w, phase: p, startPhase: serving, started: started, readyAt: started}
	c.expires = ms.cfg.recycle.expiry(started)
	ms.slots[slot] = true
	ms.board.Reset(slot)
	ms.board.SetIdle(slot, 0)
	if busy {
		ms.board.SetBusy(slot)
	}
	ms.children = append(ms.children, c)
	return c
}

// The master marks children due by their age and by the memory they put
// on the board, and reports why they exit.
func TestMarkDue(t *testing.T) {
	t.Parallel()
	ms := testMaster(t, config{minServers: 1, maxServers: 6, recycle: recycling{lifetime: time.Hour, memory: 64 << 20}})
	now := time.Now()
	young := addChild(t, ms, serving, false, now)
	old := addChild(t, ms, serving, true, now.Add(-time.Hour))
	oldParked := addChild(t, ms, parked, false, now.Add(-2*time.Hour))
	big := addChild(t, ms, serving, false, now)
	ms.board.SetRSS(big.slot, 20<<20)                            // as it became ready
	goes := addChild(t, ms, leaving, false, now.Add(-time.Hour)) // leaves anyway
	early := addChild(t, ms, starting, false, now.Add(-time.Hour))
	early.readyAt = time.Time{}

	ms.markDue(now)
	ms.board.SetRSS(big.slot, 65<<20)
	ms.board.SetBusy(big.slot) // it grew serving a request
	ms.board.SetIdle(big.slot, 1)
	ms.markDue(now)
	assert.True(t, ms.restarting)
	for c, want := range map[*child]ExitReason{young: "", old: ExitMaxLifetime, oldParked: ExitMaxLifetime, big: ExitMemoryLimit, goes: "", early: ""} {
		assert.Equal(t, want, c.due, "child %d", c.pid)
	}

	// Idle and parked children retire first; a busy one after them.
	ms.retireDue(2)
	assert.Equal(t, []phase{serving, retiring, retiring}, []phase{old.phase, oldParked.phase, big.phase})
	ms.retireDue(2)
	assert.Equal(t, retiring, old.phase, "busy: it finishes its request")

	for c, want := range map[*child]ExitReason{old: ExitMaxLifetime, big: ExitMemoryLimit} {
		assert.Equal(t, want, ms.exitReason(c, nil), "child %d", c.pid)
	}
	ms.setPhase(young, retiring) // surplus
	assert.Equal(t, ExitRetired, ms.exitReason(young, nil))
	ms.beginRestart()
	assert.Equal(t, ExitRetired, ms.exitReason(young, nil), "retired before the restart")
}

// A cap that a child passes before its first request would replace every
// child at once, one fork per request: the master gives it up, and says so.
func TestMemoryCapBelowAFreshChild(t *testing.T) {
	t.Parallel()
	ms := testMaster(t, config{minServers: 1, maxServers: 2, recycle: recycling{memory: 8 << 20}})
	fresh := addChild(t, ms, serving, false, time.Now())
	ms.board.SetRSS(fresh.slot, 9<<20)
	ms.markDue(time.Now())
	assert.Equal(t, ExitReason(""), fresh.due)
	assert.Zero(t, ms.cfg.recycle.memory, "the cap is off")

	// Under load a child takes a request as soon as it is ready, before
	// the master's first look: the memory it wrote as it became ready
	// still tells.
	ms = testMaster(t, config{minServers: 1, maxServers: 2, recycle: recycling{memory: 8 << 20}})
	taken := addChild(t, ms, serving, true, time.Now())
	ms.board.SetRSS(taken.slot, 9<<20)
	ms.markDue(time.Now())
	assert.Equal(t, ExitReason(""), taken.due)
	assert.Zero(t, ms.cfg.recycle.memory, "the cap is off")
}

// Each child gets a lifetime of its own, within the jitter.
func TestExpiryJitter(t *testing.T) {
	t.Parallel()
	start := time.Now()
	assert.True(t, recycling{}.expiry(start).IsZero(), "no MaxLifetime")
	assert.Equal(t, start.Add(time.Hour), recycling{lifetime: time.Hour, jitter: 0}.expiry(start))
	r := recycling{lifetime: time.Hour, jitter: time.Minute}
	seen := map[time.Time]bool{}
	for range 20 {
		e := r.expiry(start)
		assert.False(t, e.Before(start.Add(time.Hour)))
		assert.False(t, e.After(start.Add(time.Hour+time.Minute)))
		seen[e] = true
	}
	assert.Greater(t, len(seen), 1)
}
