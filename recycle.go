package prefork

import (
	"cmp"
	"math/rand/v2"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
)

// Recycling: the master replaces children that serve well but have served
// long enough (MaxLifetime), or have grown too large (MaxChildMemory), as
// it replaces them after RestartChildren. It marks such a child due, with
// the reason, and replaceOld retires the due children a few at a time,
// starting their replacements first where it must to keep MinServers
// ready. The master decides, for it knows when each child started and
// sees every child's memory on the board; a child only reads its own
// memory, when it is ready and then after a request, at most every
// rssEvery, so that an idle child costs nothing and a request no system
// call.

// Limits below which MaxLifetime and MaxChildMemory are refused: a child
// would be replaced as soon as it is ready. Such values are a unit gone
// wrong (3600 nanoseconds for an hour, 512 bytes for 512 MiB).
const (
	minLifetime = time.Second
	minMemory   = 1 << 20
)

// rssEvery bounds how often a child reads its resident set size.
const rssEvery = time.Second

// recycling is a Manager's MaxLifetime, MaxLifetimeJitter and
// MaxChildMemory, checked.
type recycling struct {
	lifetime, jitter time.Duration // 0: no limit, no jitter
	memory           int64         // bytes; 0: no limit
}

// recycling checks m's recycling settings.
func (m *Manager) recycling() (recycling, error) {
	r := recycling{lifetime: m.MaxLifetime, jitter: m.MaxLifetimeJitter, memory: m.MaxChildMemory}
	switch {
	case r.lifetime < 0:
		return r, invalid("Manager.MaxLifetime is negative (%v); use 0 for no limit, or how long a child may serve, such as time.Hour", r.lifetime)
	case r.lifetime > 0 && r.lifetime < minLifetime:
		return r, invalid("Manager.MaxLifetime is %v: children would be replaced as soon as they are ready; use 0 for no limit, or at least %v (time.Hour, say)", r.lifetime, minLifetime)
	case r.jitter < 0:
		return r, invalid("Manager.MaxLifetimeJitter is negative (%v); use 0 for none, or a positive duration", r.jitter)
	case r.memory < 0:
		return r, invalid("Manager.MaxChildMemory is negative (%d); use 0 for no limit, or a number of bytes, such as 512<<20 for 512 MiB", r.memory)
	case r.memory > 0 && r.memory < minMemory:
		return r, invalid("Manager.MaxChildMemory is %d bytes, less than any Go child holds; it counts bytes: use 512<<20 for 512 MiB, say", r.memory)
	}
	return r, nil
}

// expiry returns when a child started at start is due for replacement by
// MaxLifetime, with a jitter of its own; zero if never.
func (r recycling) expiry(start time.Time) time.Time {
	if r.lifetime <= 0 {
		return time.Time{}
	}
	lifetime := r.lifetime
	if r.jitter > 0 {
		lifetime += rand.N(r.jitter + 1)
	}
	return start.Add(lifetime)
}

// markDue marks the ready children that have lived past their MaxLifetime,
// or whose memory, as they last read it, has grown past MaxChildMemory, as
// due for replacement, and says so in restarting. It makes no system call.
func (ms *master) markDue(now time.Time) {
	for _, c := range ms.children {
		if c.due != "" || c.phase != serving && c.phase != parked {
			continue
		}
		rss := ms.board.RSS(c.slot)
		if c.readyRSS == 0 {
			// The child wrote it as it became ready, and writes again only
			// after a request and a second: at the master's first look,
			// this is its memory before any request, even if one has begun
			// since. (-1: it could not read its memory.)
			c.readyRSS = cmp.Or(rss, -1)
		}
		switch {
		case ms.cfg.recycle.memory > 0 && c.readyRSS > ms.cfg.recycle.memory:
			// Over the cap before any request: so would every replacement
			// be, one fork per request. The cap cannot work.
			ms.log.Warn("prefork: MaxChildMemory is below what a child holds before its first request; ignoring it",
				"max_child_memory", ms.cfg.recycle.memory, "rss", c.readyRSS, "pid", c.pid)
			ms.cfg.recycle.memory = 0
			continue
		case ms.cfg.recycle.memory > 0 && rss > ms.cfg.recycle.memory:
			c.due = ExitMemoryLimit
		case !c.expires.IsZero() && !now.Before(c.expires):
			c.due = ExitMaxLifetime
		default:
			continue
		}
		ms.restarting = true
		ms.log.Info("prefork: child due for replacement", "pid", c.pid, "reason", string(c.due), "rss", rss,
			"age", now.Sub(c.started).Round(time.Millisecond))
	}
}

// replacing decides how replaceOld goes on, given the children due for
// replacement that still serve, those that are on their way out, those
// told to go that finish a request first (which may hold a client for
// long), the children ready to serve (due ones included) and all
// processes: how many due children to retire now, or how many
// replacements to start first. A child that finishes a request serves on
// meanwhile, so it holds up no batch; but at MaxServers, where a child
// must leave before its replacement can start, the next one retires only
// once no told child is left.
func replacing(due, leaving, finishing, ready, processes int, cfg config) (retire, start int) {
	n := min(max(1, cfg.minSpare)-leaving, due) // this step's batch
	spare := ready - cfg.minServers
	room := cfg.maxServers - processes
	switch {
	case n <= 0:
	case spare > 0:
		retire = min(n, spare)
	case room > 0:
		start = min(n, room)
	case leaving+finishing == 0: // at MaxServers: one at a time, replaced after it leaves
		retire = 1
	}
	return retire, start
}

// retireDue retires up to n due children that are ready: idle and parked
// ones first, then busy ones, which finish their request.
func (ms *master) retireDue(n int) {
	for _, idleFirst := range []bool{true, false} {
		for _, c := range ms.children {
			if n > 0 && c.due != "" && c.active() && c.ready() && (!idleFirst || c.phase == parked || ms.idle(c)) {
				ms.setPhase(c, retiring)
				n--
			}
		}
	}
}

// startAhead starts n children to replace due ones before they retire;
// while children fail to start, one at a time, once the back-off has
// passed.
func (ms *master) startAhead(n int) {
	if n <= 0 {
		return
	}
	if ms.failures > 0 {
		if time.Now().Before(ms.nextSpawn) {
			return
		}
		n = 1
	}
	ms.startChildren(n, 0)
}

// warnRecycling says, once, that MaxChildMemory is ignored where a
// process's memory cannot be read.
func (ms *master) warnRecycling() {
	if ms.cfg.recycle.memory == 0 {
		return
	}
	if _, ok := sys.RSS(); !ok {
		ms.log.Warn("prefork: MaxChildMemory is ignored: a child's memory cannot be read on this system")
	}
}

// noteRSS publishes the child's resident set size on its slot, at most
// every rssEvery. The child calls it when it is ready and after each
// request, never while it waits.
func (w *worker) noteRSS() {
	now := time.Now()
	if !w.rssAt.IsZero() && now.Sub(w.rssAt) < rssEvery {
		return
	}
	w.rssAt = now
	if rss, ok := sys.RSS(); ok {
		w.board.SetRSS(w.slot, rss)
	}
}
