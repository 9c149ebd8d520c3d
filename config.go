package prefork

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
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
	network, addr          string
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

	// socket is a socket to serve that Run did not create, instead of
	// binding network and addr: Manager.Listener, or the one systemd
	// passed. The master learns its network and address as it adopts it.
	socket     syscall.Conn
	socketFrom string // which one, for messages

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
// Network and Addr are not checked: RunInProcess is given its socket, and
// a child is handed its own. With listen, the master serves the socket it
// is given (Manager.Listener, or systemd's) or else binds Addr.
func (m *Manager) config(listen bool) (config, error) {
	c := config{
		network:         m.Network,
		addr:            m.Addr,
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
	var err error
	if c.recycle, err = m.recycling(); err != nil {
		return c, err
	}
	if c.newChild == nil {
		return c, invalid("Manager.NewChild is nil; set it to a function that returns your Child")
	}
	if c.network == "" {
		c.network = "tcp"
	}
	if listen {
		err := c.takeSocket(m)
		if err == nil && c.socket == nil {
			err = c.checkAddr()
		}
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

// checkAddr checks Network and Addr, for a Manager that binds its socket.
func (c *config) checkAddr() error {
	switch c.network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if c.addr == "" {
			return invalid("Manager.Addr is empty; set it to host:port, such as \"127.0.0.1:9000\" (port 0 picks a free port)")
		}
		if _, port, err := net.SplitHostPort(c.addr); err != nil {
			return invalid("Manager.Addr %q: %v; use host:port, such as \"127.0.0.1:9000\"", c.addr, err)
		} else if _, err := net.LookupPort(c.network, port); err != nil {
			return invalid("Manager.Addr %q: bad port: %v", c.addr, err)
		}
	case "unix", "unixgram":
		if c.addr == "" {
			return invalid("Manager.Addr is empty; set it to the path of the socket file")
		}
		if c.reusePort {
			return invalid("Manager.ReusePort works with TCP and UDP only, not with Network %q", c.network)
		}
	default:
		return invalid("Manager.Network %q is not supported; use \"tcp\", \"tcp4\", \"tcp6\", \"udp\", \"udp4\", \"udp6\", \"unix\" or \"unixgram\"", c.network)
	}
	return nil
}
