package prefork

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// Socket is one of the sockets a pool serves, when it serves several: see
// Manager.Sockets. Each child serves all of them, one request at a time,
// and Request.SocketName says which one a request came from.
type Socket struct {
	// Name is what Request.SocketName, Stats and the logs call the
	// socket; each Socket's must be its own. Under systemd it picks the
	// sockets passed under that name (FileDescriptorName= in the .socket
	// unit; all the sockets of a unit share one), which the pool then
	// serves, all under that name, instead of binding Addr. Empty, the
	// socket is called by its network and bound address, such as
	// "tcp 127.0.0.1:9000".
	Name string
	// Network and Addr are as Manager's: Network defaults to "tcp", and
	// Addr is the host:port, or the Unix socket's path, to bind.
	Network, Addr string
	// Listener, when set, is a socket of the program's to serve instead
	// of binding Network and Addr, as Manager.Listener is.
	Listener syscall.Conn
}

// socketSpec is one socket the master will serve, with defaults applied:
// one to bind, or one it is given.
type socketSpec struct {
	field         string // "Manager." or "Manager.Sockets[i].", for messages
	name          string // empty: named by its network and bound address
	network, addr string
	given         syscall.Conn // a socket the master did not create, or nil
	from          string       // which one, for messages
	program       bool         // given by the program (a Listener field)
	// handed: given by the master this one succeeds, which names it by
	// handedKey, and had created it if owned.
	handed    bool
	handedKey string
	owned     bool
}

// key is the network and address, as configured, of a socket that a
// master binds, by which its successor finds it after an upgrade when it
// does not name it; a socket handed over keeps its key.
func (s socketSpec) key() string {
	switch {
	case s.handed:
		return s.handedKey
	case s.given != nil:
		return ""
	}
	return s.network + " " + s.addr
}

// socketSpecs lists the sockets that m describes: Network, Addr,
// Listener and ListenerName for one, or Sockets.
func (m *Manager) socketSpecs() ([]socketSpec, error) {
	if len(m.Sockets) == 0 {
		s := socketSpec{field: "Manager.", name: m.ListenerName, network: cmp.Or(m.Network, "tcp"), addr: m.Addr}
		if m.Listener != nil {
			s.given, s.from, s.program = m.Listener, "Manager.Listener", true
		}
		return []socketSpec{s}, nil
	}
	for _, f := range []struct {
		name string
		set  bool
	}{{"Network", m.Network != ""}, {"Addr", m.Addr != ""}, {"Listener", m.Listener != nil}, {"ListenerName", m.ListenerName != ""}} {
		if f.set {
			return nil, invalid("Manager.Sockets and Manager.%s are both set: describe every socket in Sockets, or one with Network, Addr, Listener and ListenerName alone", f.name)
		}
	}
	specs := make([]socketSpec, len(m.Sockets))
	named := map[string]int{}
	for i, s := range m.Sockets {
		field := fmt.Sprintf("Manager.Sockets[%d].", i)
		if j, dup := named[s.Name]; dup && s.Name != "" {
			return nil, invalid("%sName %q is Sockets[%d]'s too: give each socket a name of its own", field, s.Name, j)
		}
		named[s.Name] = i
		specs[i] = socketSpec{field: field, name: s.Name, network: cmp.Or(s.Network, "tcp"), addr: s.Addr}
		if s.Listener != nil {
			specs[i].given, specs[i].from, specs[i].program = s.Listener, field+"Listener", true
		}
	}
	return specs, nil
}

// takeSockets settles what the master serves: the sockets the program
// gave it, the ones systemd passed in place of those it would bind (by
// name; in the one-socket case, all of them unless ListenerName picks),
// and the rest it binds, whose addresses it checks.
func (c *config) takeSockets(m *Manager) error {
	passed := systemdSockets() // read even when unused, to clear the environment
	prev := handedOver
	if prev.err != nil {
		return invalid("upgrade: %v", prev.err)
	}
	c.predecessor = prev
	handed := prev.sockets
	prev.sockets = nil // this master's to take or close; another Run finds none
	return c.takeSocketsFrom(m, passed, handed)
}

// takeSocketsFrom is takeSockets, with the sockets systemd passed and
// those the master that this one succeeds handed over.
func (c *config) takeSocketsFrom(m *Manager, passed passedSockets, handed []wire.UpgradeSocket) error {
	specs, err := m.socketSpecs()
	if err != nil {
		return err
	}
	if len(handed) > 0 {
		specs = c.takeHanded(specs, handed, len(m.Sockets) == 0)
	}
	if passed.err != nil {
		return invalid("socket activation: %v", passed.err)
	}
	taken := make([]bool, len(passed.fds))
	single := len(m.Sockets) == 0
	for _, s := range specs {
		if s.given != nil || s.name == "" && !single {
			c.sockets = append(c.sockets, s)
			continue
		}
		matched := false
		for i, name := range passed.names {
			if s.name == "" || name == s.name {
				matched, taken[i] = true, true
				c.sockets = append(c.sockets, socketSpec{
					field: s.field, name: name, given: passedSocket(passed.fds[i]),
					from: fmt.Sprintf("the socket systemd passed as descriptor %d (%s)", passed.fds[i], name),
				})
			}
		}
		switch {
		case matched:
		case single && len(passed.fds) > 0:
			return invalid("Manager.ListenerName is %q, but systemd passed no socket of that name (%s); use one of those names (FileDescriptorName= in the .socket unit)", s.name, passed)
		case s.addr == "" && len(passed.fds) > 0:
			return invalid("%sName is %q, but systemd passed no socket of that name (%s), and %sAddr is empty: use one of those names (FileDescriptorName= in the .socket unit), or set Addr", s.field, s.name, passed, s.field)
		default:
			c.sockets = append(c.sockets, s)
		}
	}
	for i, t := range taken {
		if !t {
			c.unusedPassed = append(c.unusedPassed, fmt.Sprintf("%s (descriptor %d)", passed.names[i], passed.fds[i]))
		}
	}
	for _, s := range c.sockets {
		if s.given == nil {
			if err := s.checkAddr(c.reusePort); err != nil {
				return err
			}
		} else if c.reusePort {
			return invalid("Manager.ReusePort makes each child bind a socket of its own, but the pool is given one to serve (%s); unset ReusePort", s.from)
		}
	}
	return nil
}

// takeHanded puts the sockets that a previous master handed over in place
// of those specs would bind: each by the name of a Socket (or
// ListenerName), or, for an unnamed one, by its network and address as
// configured; in the one-socket case, also all those the previous master
// was given by systemd, as they were served. It returns the specs; the
// handed sockets left over are in c.unusedHanded.
func (c *config) takeHanded(specs []socketSpec, handed []wire.UpgradeSocket, single bool) []socketSpec {
	taken := make([]bool, len(handed))
	take := func(s socketSpec, h wire.UpgradeSocket) socketSpec {
		return socketSpec{
			field: s.field, name: cmp.Or(s.name, h.Name), given: passedSocket(h.FD),
			handed: true, handedKey: h.Key, owned: h.Owned,
			from: fmt.Sprintf("the socket the previous master handed over as descriptor %d (%s)", h.FD, h.Name),
		}
	}
	// Each spec takes one socket: by name first, for all of them, then by
	// key; in the one-socket case, all those systemd passed.
	found := make([][]socketSpec, len(specs))
	for pass := range 3 {
		for k, s := range specs {
			if s.given != nil || found[k] != nil {
				continue
			}
			for i, h := range handed {
				match := [3]bool{
					s.name != "" && h.Name == s.name,
					h.Key != "" && h.Key == s.key(),
					single && s.name == "" && h.Key == "",
				}[pass]
				if !taken[i] && match {
					taken[i] = true
					found[k] = append(found[k], take(s, h))
					if pass < 2 {
						break
					}
				}
			}
		}
	}
	var out []socketSpec
	for k, s := range specs {
		if found[k] == nil {
			found[k] = []socketSpec{s}
		}
		out = append(out, found[k]...)
	}
	for i, h := range handed {
		if !taken[i] {
			c.unusedHanded = append(c.unusedHanded, h)
		}
	}
	return out
}

// checkAddr checks the network and address of a socket to bind.
func (s socketSpec) checkAddr(reusePort bool) error {
	switch s.network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
		if s.addr == "" {
			return invalid("%sAddr is empty; set it to host:port, such as \"127.0.0.1:9000\" (port 0 picks a free port)", s.field)
		}
		if _, port, err := net.SplitHostPort(s.addr); err != nil {
			return invalid("%sAddr %q: %v; use host:port, such as \"127.0.0.1:9000\"", s.field, s.addr, err)
		} else if _, err := net.LookupPort(s.network, port); err != nil {
			return invalid("%sAddr %q: bad port: %v", s.field, s.addr, err)
		}
	case "unix", "unixgram":
		if s.addr == "" {
			return invalid("%sAddr is empty; set it to the path of the socket file", s.field)
		}
		if reusePort {
			return invalid("Manager.ReusePort works with TCP and UDP only, not with %sNetwork %q", s.field, s.network)
		}
	default:
		return invalid("%sNetwork %q is not supported; use \"tcp\", \"tcp4\", \"tcp6\", \"udp\", \"udp4\", \"udp6\", \"unix\" or \"unixgram\"", s.field, s.network)
	}
	return nil
}

// hasFile reports whether the master binds s as a Unix socket with a file.
func (s socketSpec) hasFile() bool {
	return s.given == nil && sys.IsUnix(s.network) && !strings.HasPrefix(s.addr, "@")
}

// passedSocket is a descriptor that systemd passed, which the process
// keeps open (see systemdSockets).
type passedSocket int

func (s passedSocket) SyscallConn() (syscall.RawConn, error) { return s, nil }

func (s passedSocket) Control(f func(fd uintptr)) error { f(uintptr(s)); return nil }

func (passedSocket) Read(func(fd uintptr) bool) error  { return errors.ErrUnsupported }
func (passedSocket) Write(func(fd uintptr) bool) error { return errors.ErrUnsupported }

// listener is one socket the master serves, shared with its children.
type listener struct {
	name    string
	network string
	addr    net.Addr
	file    *os.File
	fd      int    // file's descriptor, for reading the queue
	key     string // socketSpec.key, for an upgrade
	adopted bool   // a socket the master did not create: Manager.Listener, or systemd's
	program bool   // given by the program: not handed over in an upgrade
	// pendingOwn: handed over by the master this one succeeds, which had
	// created it; this master's once that master has given it up.
	pendingOwn bool
	// intakeClosed says that the socket takes no new connections: the
	// pool stops.
	intakeClosed bool
	queued       int // what the master last read of its queue; -1 unknown
}

// listen binds the master's sockets between the PreBind hook and its
// return, and adopts those it was given: duplicates, whose networks and
// addresses the master learns from them. PreBind is not called when
// nothing is bound. On failure it closes what it opened.
func (ms *master) listen() error {
	cfg := &ms.cfg
	if slices.ContainsFunc(cfg.sockets, func(s socketSpec) bool { return s.given == nil }) {
		if err := callHook("PreBind", cfg.hooks.PreBind, ms.ctx); err != nil {
			return err
		}
	}
	for _, s := range cfg.sockets {
		l, err := ms.open(s)
		if err != nil {
			ms.closeListeners()
			return err
		}
		l.name, l.key = cmp.Or(s.name, l.network+" "+l.addr.String()), s.key()
		ms.listeners = append(ms.listeners, l) // closeListeners closes it, and removes its file
		if l.fd, err = sys.FD(l.file); err != nil {
			ms.closeListeners()
			return fmt.Errorf("prefork: %w", err)
		}
	}
	return nil
}

// open binds s, or adopts the socket it names.
func (ms *master) open(s socketSpec) (*listener, error) {
	if s.given == nil {
		file := ms.cfg.socketFile
		if !s.hasFile() {
			file = nil
		}
		f, addr, err := sys.ListenWith(s.network, s.addr, ms.cfg.backlog, false, file)
		if err != nil {
			return nil, fmt.Errorf("prefork: listen on %s %s: %w", s.network, s.addr, err)
		}
		return &listener{network: s.network, addr: addr, file: f, queued: -1}, nil
	}
	l := &listener{adopted: true, pendingOwn: s.owned, program: s.program, queued: -1}
	raw, err := s.given.SyscallConn()
	if err == nil {
		var adoptErr error
		err = raw.Control(func(fd uintptr) { l.file, l.network, l.addr, adoptErr = sys.Adopt(int(fd)) })
		err = cmp.Or(err, adoptErr)
	}
	if err != nil {
		return nil, fmt.Errorf("prefork: cannot serve %s: %w", s.from, err)
	}
	if s.handed {
		syscall.Close(int(s.given.(passedSocket))) // the master serves its duplicate
		ms.log.Info("prefork: taking over a socket", "from", s.from)
	} else {
		ms.log.Info("prefork: serving a socket it did not create", "from", s.from)
	}
	return l, nil
}

// closeListeners closes the master's sockets, and removes the files of the
// Unix sockets it bound, unless a graceful stop removed them already: by
// then a path may be a new server's.
func (ms *master) closeListeners() {
	for _, l := range ms.listeners {
		l.file.Close()
		if !l.intakeClosed && !l.adopted {
			sys.RemoveSocketFile(l.network, l.addr.String())
		}
	}
}

// readQueues reads each listener's queue, and returns the sum of those it
// can read: -1 when it can read none, or the master has no socket
// (reuse-port mode). all says whether it read every one.
func (ms *master) readQueues() (sum int, all bool) {
	sum, all = -1, len(ms.listeners) > 0
	for _, l := range ms.listeners {
		if l.queued = sys.Queued(l.fd, l.network); l.queued < 0 {
			all = false
			continue
		}
		sum = max(sum, 0) + l.queued
	}
	return sum, all
}

// closeIntake stops new connections from entering the queues of the
// sockets the master created, before the children are told to stop: they
// serve what is queued before they leave, and the sockets close with
// nothing in them to reset. A socket given to the master is left as it
// is: what comes, and what is queued when the children have left, waits
// for the socket's next server (systemd, or the program, holds it
// meanwhile).
func (ms *master) closeIntake() {
	for _, l := range ms.listeners {
		if l.adopted {
			continue
		}
		if err := sys.CloseIntake(l.fd, l.network); err != nil {
			ms.log.Warn("prefork: cannot refuse new connections while stopping; those that come will be reset", "socket", l.name, "err", err)
			continue
		}
		l.intakeClosed = true
	}
}
