package prefork

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sdnotify"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// A zero-downtime upgrade, as nginx's binary upgrade and tableflip do it:
// the master starts the program's binary as it is on disk now, as its
// successor, and hands it its sockets. The successor starts its pool on
// them; once that pool is ready, the old master stops gracefully and
// leaves the sockets as they are: what is queued on them, and what comes,
// goes to the successor's children, while the old children finish the
// requests they have. If the successor fails, the old pool serves on.

// ErrUpgrade is returned by Manager.Upgrade when the successor could not
// take over: it did not start, exited, or was not ready in time. The pool
// serves on.
var ErrUpgrade = errors.New("prefork: upgrade failed")

// Upgrade starts the program's binary, as it is on disk now, as a new
// master with the same arguments and environment, and hands it the pool's
// sockets; SIGUSR2 does the same (see DefaultSignal). The new master starts
// its children on those sockets; once MinServers of them are ready, this
// master stops gracefully: its children finish their requests, the
// sockets stay open and keep their queues for the new children, and Run
// returns nil. No connection is refused or reset on the way.
//
// Upgrade waits until then, and returns nil, or ErrUpgrade (wrapped, with
// why) when the new master did not start, exited, or was not ready within
// StartTimeout: then the pool serves on as before. If ctx is done first,
// Upgrade returns ctx's error and the upgrade goes on. It returns
// ErrNotRunning when Run is not running in this process's master.
//
// The new master is a child process of this one until this one exits. Its
// own Run finds the sockets by name (Socket.Name or ListenerName), or an
// unnamed one by its network and address as configured; a socket that the
// new configuration does not name is closed, and one it names anew is
// bound. The sockets the program gives the pool itself (Listener) cannot be
// handed over: the new program would have to make them while the old one
// holds them. In reuse-port mode nothing is handed over: each new child
// binds its own socket beside the old ones'. For a while both pools run:
// up to twice MaxServers children in all. Under systemd, the old master
// tells systemd the new master's pid (MAINPID=), so that the unit follows
// it.
func (m *Manager) Upgrade(ctx context.Context) error {
	ms := m.master(false)
	if ms == nil {
		return ErrNotRunning
	}
	result := make(chan error, 1)
	ms.askMu.Lock()
	ms.upgradeAsks = append(ms.upgradeAsks, result)
	ms.askMu.Unlock()
	ms.wake()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// successor is an upgrade under way: the new master, and who waits for
// the outcome.
type successor struct {
	cmd     *exec.Cmd
	pid     int // cmd's, which Release forgets
	waiters []chan<- error
}

// beginUpgrade starts a successor, unless one is starting already; waiter,
// if not nil, receives the outcome.
func (ms *master) beginUpgrade(waiter chan<- error) {
	if ms.upgrading != nil {
		if waiter != nil {
			ms.upgrading.waiters = append(ms.upgrading.waiters, waiter)
		}
		return
	}
	fail := func(err error) {
		err = fmt.Errorf("%w: %w", ErrUpgrade, err)
		ms.log.Error("prefork: cannot upgrade; serving on", "err", err)
		if waiter != nil {
			waiter <- err
		}
	}
	if ms.stopping || ms.draining != nil {
		fail(errors.New("the pool is stopping"))
		return
	}
	cmd, ready, err := ms.startSuccessor()
	if err != nil {
		fail(err)
		return
	}
	ms.upgrading = &successor{cmd: cmd, pid: cmd.Process.Pid}
	if waiter != nil {
		ms.upgrading.waiters = append(ms.upgrading.waiters, waiter)
	}
	ms.log.Info("prefork: upgrading: a new master starts", "pid", cmd.Process.Pid, "program", cmd.Path)
	ms.watchers.Go(func() { ms.upgradeDone <- ms.awaitSuccessor(cmd, ready) })
}

// startSuccessor starts the program's binary as a new master, with the
// sockets, and returns the end of the pipe on which it says it is ready.
func (ms *master) startSuccessor() (*exec.Cmd, *os.File, error) {
	exe, err := os.Executable() // the file on disk now, not the binary this process runs
	if err != nil {
		return nil, nil, fmt.Errorf("cannot find the program: %w", err)
	}
	ready, readyW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	defer readyW.Close()
	u := wire.Upgrade{}
	files := []*os.File{readyW}
	for _, l := range ms.listeners {
		u.Sockets = append(u.Sockets, wire.UpgradeSocket{
			Name: l.name, Key: l.key, FD: wire.FDFirstUpgradeSocket + len(files) - 1, Owned: !l.adopted,
		})
		files = append(files, l.file)
	}
	env := []string{wire.EnvUpgrade + "=" + wire.EncodeUpgrade(u)}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		// The watchdog is the new master's to feed once systemd follows it.
		if name != wire.EnvUpgrade && name != sdnotify.EnvWatchdogPID {
			env = append(env, kv)
		}
	}
	cmd := &exec.Cmd{
		Path: exe, Args: os.Args, Env: env,
		Stdout: os.Stdout, Stderr: os.Stderr,
		ExtraFiles: files,
	}
	if err := cmd.Start(); err != nil {
		ready.Close()
		return nil, nil, err
	}
	return cmd, ready, nil
}

// awaitSuccessor waits until the successor says it is ready, and returns
// nil; or until it fails, or StartTimeout passes, and then stops it and
// returns why.
func (ms *master) awaitSuccessor(cmd *exec.Cmd, ready *os.File) error {
	defer ready.Close()
	if ms.cfg.startTimeout > 0 {
		ready.SetReadDeadline(time.Now().Add(ms.cfg.startTimeout))
	}
	var b [1]byte
	n, err := ready.Read(b[:])
	if n == 1 {
		cmd.Process.Release() // this process may outlive its use of it; the new master is on its own
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("the new master (pid %d) was not ready within StartTimeout (%v)", cmd.Process.Pid, ms.cfg.startTimeout)
	} else {
		err = fmt.Errorf("the new master (pid %d) exited before its pool was ready", cmd.Process.Pid)
	}
	// Its children stop with it; whatever is left after ShutdownTimeout
	// and a second is killed.
	cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case how := <-exited:
		if how != nil {
			err = fmt.Errorf("%w: %w", err, how)
		}
	case <-time.After(ms.cfg.shutdownTimeout + killGrace):
		cmd.Process.Kill()
		<-exited
	}
	return err
}

// upgraded takes the outcome of an upgrade: on success the old master
// stops, leaving the sockets to the new one.
func (ms *master) upgraded(err error) {
	s := ms.upgrading
	ms.upgrading = nil
	if err == nil && ms.stopping {
		err = errors.New("the pool began to stop meanwhile, and stopped the new master")
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrUpgrade, err)
		ms.log.Error("prefork: upgrade failed; serving on", "err", err)
	} else {
		pid := s.pid
		ms.log.Info("prefork: upgraded: the new master serves; stopping", "pid", pid)
		for _, l := range ms.listeners {
			l.adopted = true // the new master's now: intake, queue and file stay as they are
		}
		// From now on the service manager hears from the new master:
		// this one's stop is not the service's.
		ms.sd.tell(fmt.Sprintf("MAINPID=%d", pid), "")
		ms.sd.close()
		ms.sd = notifier{}
		ms.drained = true // nothing to drain: the sockets serve on
		ms.stop(ActionStop, nil)
	}
	for _, w := range s.waiters {
		w <- err
	}
}

// abandonUpgrade stops a successor that is still starting, when the pool
// stops: the sockets it would take over are closing.
func (ms *master) abandonUpgrade() {
	if ms.upgrading != nil {
		ms.upgrading.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// predecessor is what a master that upgraded handed this process, read
// once per process, as systemd's sockets are.
type predecessor struct {
	sockets []wire.UpgradeSocket
	ready   *os.File // where to say that the pool is ready; nil once said
	err     error
}

var handedOver = sync.OnceValue(func() *predecessor {
	value, ok := os.LookupEnv(wire.EnvUpgrade)
	if !ok {
		return &predecessor{}
	}
	os.Unsetenv(wire.EnvUpgrade)
	u, err := wire.DecodeUpgrade(value)
	if err != nil {
		return &predecessor{err: err}
	}
	p := &predecessor{sockets: u.Sockets}
	for _, s := range u.Sockets {
		if err := sys.Inherited(s.FD); err != nil { // close-on-exec: for this process only
			return &predecessor{err: fmt.Errorf("%s: %w", wire.EnvUpgrade, err)}
		}
	}
	if err := sys.Inherited(wire.FDUpgradeReady); err != nil {
		return &predecessor{err: fmt.Errorf("%s: %w", wire.EnvUpgrade, err)}
	}
	p.ready = os.NewFile(wire.FDUpgradeReady, "prefork-upgrade-ready")
	return p
})

// tellReady tells the master that started this one, if any, that the pool
// is ready: it then stops.
func (p *predecessor) tellReady() {
	if p == nil || p.ready == nil {
		return
	}
	p.ready.Write([]byte{1})
	p.ready.Close()
	p.ready = nil
}
