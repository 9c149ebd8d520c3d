package prefork

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/prefork-go/prefork/internal/sys"
)

// takeSocket picks the socket the master serves but did not create:
// Manager.Listener, or else the one that systemd passed. Without either,
// the master binds Network and Addr.
func (c *config) takeSocket(m *Manager) error {
	passed := systemdSockets() // read even when unused, to clear the environment
	if m.Listener != nil {
		c.socket, c.socketFrom = m.Listener, "Manager.Listener"
	} else if fd, err := passed.choose(m.ListenerName); err != nil {
		return err
	} else if fd >= 0 {
		c.socket, c.socketFrom = passedSocket(fd), fmt.Sprintf("the socket systemd passed as descriptor %d", fd)
	}
	if c.socket != nil && c.reusePort {
		return invalid("Manager.ReusePort makes each child bind a socket of its own, but the pool is given one to serve (%s); unset ReusePort", c.socketFrom)
	}
	return nil
}

// passedSocket is a descriptor that systemd passed, which the process
// keeps open (see systemdSockets).
type passedSocket int

func (s passedSocket) SyscallConn() (syscall.RawConn, error) { return s, nil }

func (s passedSocket) Control(f func(fd uintptr)) error { f(uintptr(s)); return nil }

func (passedSocket) Read(func(fd uintptr) bool) error  { return errors.ErrUnsupported }
func (passedSocket) Write(func(fd uintptr) bool) error { return errors.ErrUnsupported }

// listen binds the master's socket between the PreBind hook and its
// return, or adopts the one it was given: a duplicate, whose network and
// address replace the configured ones. PreBind is not called then:
// nothing is bound.
func (ms *master) listen() (*os.File, net.Addr, error) {
	cfg := &ms.cfg
	if cfg.socket == nil {
		if err := callHook("PreBind", cfg.hooks.PreBind, ms.ctx); err != nil {
			return nil, nil, err
		}
		listener, addr, err := sys.ListenWith(cfg.network, cfg.addr, cfg.backlog, false, cfg.socketFile)
		if err != nil {
			return nil, nil, fmt.Errorf("prefork: listen on %s %s: %w", cfg.network, cfg.addr, err)
		}
		return listener, addr, nil
	}
	var (
		listener *os.File
		network  string
		addr     net.Addr
	)
	raw, err := cfg.socket.SyscallConn()
	if err == nil {
		var adoptErr error
		err = raw.Control(func(fd uintptr) { listener, network, addr, adoptErr = sys.Adopt(int(fd)) })
		err = cmp.Or(err, adoptErr)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("prefork: cannot serve %s: %w", cfg.socketFrom, err)
	}
	ms.adopted = true
	cfg.network, cfg.addr = network, addr.String()
	ms.log.Info("prefork: serving a socket it did not create", "from", cfg.socketFrom)
	return listener, addr, nil
}
