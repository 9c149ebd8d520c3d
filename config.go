package prefork

import (
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
	"golang.org/x/sys/unix"
)

// Defaults for the zero values of Manager's fields. The pool sizes are
// py-prefork-server's.
const (
	DefaultMinServers      = 5
	DefaultMaxServers      = 20
	DefaultMinSpareServers = 2
	DefaultMaxSpareServers = 10
	DefaultShutdownTimeout = 30 * time.Second
	DefaultChildTimerSlack = 500 * time.Microsecond
	DefaultStartTimeout    = time.Minute
)

// config is a Manager's settings with defaults applied and checked. Run
// works on it and never writes to the Manager.
type config struct {
	// ceiling is MaxServers at the start: the scoreboard's size, which
	// SetLimits cannot exceed. minServers and the other limits may change.
	ceiling                int
	reusePort              bool
	backlog                int
	minServers, maxServers int
	minSpare, maxSpare     int
	maxRequests, jitter    int
	recycle                recycling
	requestTimeout         time.Duration
	slowRequest            time.Duration
	drainDelay             time.Duration
	shutdownTimeout        time.Duration
	startTimeout           time.Duration // 0: none
	childMaxProcs          int
	noSignals              bool
	childTimerSlack        time.Duration
	logger                 *slog.Logger
	newChild               func() Child
	hooks                  ManagerHooks

	// sockets are what the master serves: sockets to bind, and sockets
	// it did not create (Manager.Listener, Socket.Listener, systemd's),
	// whose networks and addresses it learns as it adopts them.
	sockets []socketSpec
	// unusedPassed names the sockets systemd passed that the pool does
	// not serve, for the log; unusedHanded are those a previous master
	// handed over, which the master closes.
	unusedPassed []string
	unusedHanded []wire.UpgradeSocket
	// predecessor is the master this one succeeds, if an upgrade started
	// it: it waits to hear that the pool is ready.
	predecessor *predecessor

	credential *syscall.Credential // whom the children run as; nil: the master's user
	socketFile *sys.SocketFile     // what the master makes of a Unix socket's file; nil: nothing
}

// requestLimit is how many requests one child serves: MaxRequests, plus a
// jitter of the child's own; 0 for no limit.
func (c config) requestLimit() int {
	if c.maxRequests > 0 && c.jitter > 0 {
		return c.maxRequests + rand.IntN(c.jitter+1)
	}
	return c.maxRequests
}

// Settings past these are mistakes, and would overflow the sums that add
// a grace or a jitter to them.
const (
	maxDuration = 100 * 365 * 24 * time.Hour
	maxCount    = math.MaxInt32
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
}

// orDefault returns v, or def when v is zero (unset). The callers bound def
// by the values the user did set, so that setting only MaxServers to 3 does
// not collide with the default MinServers of 5.
func orDefault(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

// config checks m's settings and applies the defaults. Without listen,
// the sockets are not checked: RunInProcess is given its socket, and a
// child is handed its own. With listen, the master serves the sockets it
// is given (Listener fields, or systemd's) and binds the others.
func (m *Manager) config(listen bool) (config, error) {
	c := config{
		reusePort:       m.ReusePort,
		backlog:         m.Backlog,
		maxRequests:     m.MaxRequests,
		jitter:          m.MaxRequestsJitter,
		requestTimeout:  m.RequestTimeout,
		slowRequest:     m.SlowRequest,
		drainDelay:      m.DrainDelay,
		shutdownTimeout: m.ShutdownTimeout,
		startTimeout:    m.StartTimeout,
		childMaxProcs:   m.ChildMaxProcs,
		noSignals:       m.NoSignals,
		childTimerSlack: m.ChildTimerSlack,
		logger:          m.Logger,
		newChild:        m.NewChild,
		hooks:           m.Hooks,
	}
	for _, f := range []struct {
		name  string
		value int64
	}{
		{"MinServers", int64(m.MinServers)}, {"MaxServers", int64(m.MaxServers)},
		{"MinSpareServers", int64(m.MinSpareServers)}, {"MaxSpareServers", int64(m.MaxSpareServers)},
		{"MaxRequests", int64(m.MaxRequests)}, {"Backlog", int64(m.Backlog)},
		{"ShutdownTimeout", int64(m.ShutdownTimeout)}, {"MaxRequestsJitter", int64(m.MaxRequestsJitter)},
		{"RequestTimeout", int64(m.RequestTimeout)}, {"SlowRequest", int64(m.SlowRequest)},
		{"DrainDelay", int64(m.DrainDelay)},
	} {
		if f.value < 0 {
			return c, invalid("Manager.%s is negative (%d); use 0 for the default or a positive value", f.name, f.value)
		}
	}
	for _, f := range []struct {
		name  string
		value time.Duration
	}{
		{"ShutdownTimeout", m.ShutdownTimeout}, {"RequestTimeout", m.RequestTimeout}, {"SlowRequest", m.SlowRequest},
		{"DrainDelay", m.DrainDelay}, {"StartTimeout", m.StartTimeout}, {"MaxLifetime", m.MaxLifetime},
		{"MaxLifetimeJitter", m.MaxLifetimeJitter},
	} {
		if f.value > maxDuration {
			return c, invalid("Manager.%s is %v, over a century; use 0 for the default or a shorter time", f.name, f.value)
		}
	}
	if m.MaxRequests > maxCount-m.MaxRequestsJitter || m.MaxRequestsJitter > maxCount {
		return c, invalid("Manager.MaxRequests (%d) plus MaxRequestsJitter (%d) is over %d", m.MaxRequests, m.MaxRequestsJitter, maxCount)
	}
	var err error
	if c.recycle, err = m.recycling(); err != nil {
		return c, err
	}
	if c.newChild == nil {
		return c, invalid("Manager.NewChild is nil; set it to a function that returns your Child")
	}
	if listen {
		err := c.takeSockets(m)
		if err == nil {
			err = c.identities(m, systemPrivileges())
		}
		if err != nil {
			return c, err
		}
	}

	c.maxServers = orDefault(m.MaxServers, max(DefaultMaxServers, m.MinServers))
	c.minServers = orDefault(m.MinServers, min(DefaultMinServers, c.maxServers))
	c.maxSpare = orDefault(m.MaxSpareServers, max(DefaultMaxSpareServers, m.MinSpareServers))
	c.minSpare = orDefault(m.MinSpareServers, min(DefaultMinSpareServers, c.maxSpare, c.maxServers))
	if c.minServers > c.maxServers {
		return c, invalid("MinServers (%d) is greater than MaxServers (%d); raise MaxServers or lower MinServers", c.minServers, c.maxServers)
	}
	if c.minSpare > c.maxSpare {
		return c, invalid("MinSpareServers (%d) is greater than MaxSpareServers (%d); raise MaxSpareServers or lower MinSpareServers", c.minSpare, c.maxSpare)
	}
	if c.minSpare > c.maxServers {
		return c, invalid("MinSpareServers (%d) is greater than MaxServers (%d): the pool could never keep that many children idle", c.minSpare, c.maxServers)
	}
	c.ceiling = c.maxServers
	switch {
	case c.childTimerSlack == 0:
		c.childTimerSlack = DefaultChildTimerSlack
	case c.childTimerSlack < 0:
		c.childTimerSlack = 0 // the children keep the slack they inherit
	}
	if c.childTimerSlack > time.Second {
		return c, invalid("Manager.ChildTimerSlack is %v; every timer in the children could fire that late: use at most a second (1ms is plenty)", c.childTimerSlack)
	}
	if c.backlog == 0 {
		c.backlog = unix.SOMAXCONN
	}
	switch {
	case c.startTimeout == 0:
		c.startTimeout = DefaultStartTimeout
	case c.startTimeout < 0:
		c.startTimeout = 0 // no limit
	}
	if c.shutdownTimeout == 0 {
		c.shutdownTimeout = DefaultShutdownTimeout
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, nil
}
