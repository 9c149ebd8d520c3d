package prefork

import (
	"errors"
	"syscall"
)

// Changing the pool's size limits while it runs: Manager.SetLimits, and
// SIGTTIN and SIGTTOU, as gunicorn and Net::Server take them.

// ErrNotRunning is returned by SetLimits when Run is not running in this
// process's master.
var ErrNotRunning = errors.New("prefork: the Manager is not running")

// SetLimits changes the pool's size limits while Run runs, as the fields
// of the same names set them at the start; the master grows or shrinks the
// pool to them at its next look, without failing a request (surplus
// children leave once idle). MaxServers can go no higher than it was when
// Run started: every child maps a scoreboard of that many slots. Limits that
// cannot work return an error wrapping ErrInvalidConfig, which names the
// fault, and change nothing; SetLimits returns ErrNotRunning when Run is
// not running in this process's master. It is safe from any goroutine, and
// from hooks; Stats shows the limits in force.
func (m *Manager) SetLimits(l Limits) error {
	ms := m.master(false)
	if ms == nil {
		return ErrNotRunning
	}
	if err := l.check(ms.ceiling()); err != nil {
		return err
	}
	ms.askMu.Lock()
	ms.limits = &l
	ms.askMu.Unlock()
	ms.wake()
	return nil
}

// check reports what keeps l from working in a pool of at most ceiling
// children.
func (l Limits) check(ceiling int) error {
	switch {
	case l.MinServers < 1:
		return invalid("Limits.MinServers is %d; a pool needs at least 1", l.MinServers)
	case l.MaxServers < l.MinServers:
		return invalid("Limits.MaxServers (%d) is less than MinServers (%d)", l.MaxServers, l.MinServers)
	case l.MaxServers > ceiling:
		return invalid("Limits.MaxServers is %d; this pool was started with MaxServers %d, which it cannot exceed (its scoreboard has that many slots)", l.MaxServers, ceiling)
	case l.MinSpareServers < 0 || l.MaxSpareServers < 0:
		return invalid("Limits.MinSpareServers (%d) and MaxSpareServers (%d) cannot be negative", l.MinSpareServers, l.MaxSpareServers)
	case l.MinSpareServers > l.MaxSpareServers:
		return invalid("Limits.MinSpareServers (%d) is greater than MaxSpareServers (%d)", l.MinSpareServers, l.MaxSpareServers)
	case l.MinSpareServers > l.MaxServers:
		return invalid("Limits.MinSpareServers (%d) is greater than MaxServers (%d): the pool could never keep that many children spare", l.MinSpareServers, l.MaxServers)
	}
	return nil
}

// ceiling is the most children the pool can ever have: the MaxServers it
// started with. It is fixed before the master is published.
func (ms *master) ceiling() int { return ms.cfg.ceiling }

// setLimits puts l in force; the loop calls it.
func (ms *master) setLimits(l Limits) {
	ms.cfg.minServers, ms.cfg.maxServers, ms.cfg.minSpare, ms.cfg.maxSpare = l.MinServers, l.MaxServers, l.MinSpareServers, l.MaxSpareServers
	p := &ms.policy
	p.minServers, p.maxServers, p.minSpare, p.maxSpare = l.MinServers, l.MaxServers, l.MinSpareServers, l.MaxSpareServers
	ms.counted(func(s *Stats) { s.Limits = l })
	ms.log.Info("prefork: limits changed", "min_servers", l.MinServers, "max_servers", l.MaxServers,
		"min_spare_servers", l.MinSpareServers, "max_spare_servers", l.MaxSpareServers)
}

// limitsNow returns the limits in force.
func (ms *master) limitsNow() Limits {
	return Limits{ms.cfg.minServers, ms.cfg.maxServers, ms.cfg.minSpare, ms.cfg.maxSpare}
}

// stepSize handles SIGTTIN (one more child, for good: MinServers + 1, and
// MaxServers with it if needed, within the ceiling) and SIGTTOU (one fewer:
// MinServers - 1, at least 1).
func (ms *master) stepSize(sig syscall.Signal) {
	l := ms.limitsNow()
	if sig == syscall.SIGTTIN {
		l.MinServers++
		l.MaxServers = max(l.MaxServers, l.MinServers)
	} else {
		l.MinServers--
	}
	if err := l.check(ms.ceiling()); err != nil {
		ms.log.Warn("prefork: cannot change the pool's size", "signal", sig.String(), "err", err)
		return
	}
	ms.setLimits(l)
}
