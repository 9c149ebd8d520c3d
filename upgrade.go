package prefork

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sdnotify"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// A zero-downtime upgrade, as nginx's binary upgrade and tableflip do it:
// the master starts the program's binary as it is on disk now, as its
// successor, and hands it its sockets. The successor starts its pool on
// them; once that pool is ready, the old master gives it the sockets, stops
// gracefully and leaves them as they are: what is queued on them, and what
// comes, goes to the successor's children, while the old children finish
// the requests they have. If the successor fails, the old pool serves on,
// on sockets the successor has left as they were.

// ErrUpgrade is returned by Manager.Upgrade when the successor could not
// take over: it did not start, exited, or was not ready in time, or the
// pool stopped meanwhile. The pool serves on, unless it is stopping.
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
// StartTimeout, or the pool began to stop meanwhile: the new master is then
// stopped, and the pool serves on as before. If ctx is done first, Upgrade
// returns ctx's error and the upgrade goes on. It returns ErrNotRunning when
// Run is not running in this process's master. Do not call it from a hook,
// which the master waits for: call it from a goroutine of its own, or
// return ActionUpgrade from ManagerHooks.Signal.
//
// The program is the file that started this process, by the path it was
// started with (os.Args[0], or found in PATH): a deploy that switches a
// symbolic link to a new release, or renames a new binary into place, is
// picked up. The new master finds each socket by name (Socket.Name, or
// ListenerName), or an unnamed one by its network and address as
// configured; one that the new configuration does not name is closed, and
// one it names anew is bound. The sockets the program gives the pool itself
// (Listener) are not handed over: the new program would have to make them
// while this one holds them. In reuse-port mode nothing is handed over:
// each new child binds its own socket beside the old ones'. For a while
// both pools run: up to twice MaxServers children. Limits set by SetLimits,
// SIGTTIN or SIGTTOU are not carried over. The new master is a child
// process of this one until this one exits. Under systemd, this master
// tells systemd the new master's pid (MAINPID=), so that the unit follows
// it, and tells it nothing after.
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
	case <-ms.done:
		select {
		case err := <-result:
			return err
		default:
			return fmt.Errorf("%w: the pool stopped", ErrUpgrade)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// successor is an upgrade under way: the new master, the master's end of
// the link to it, and who waits for the outcome.
type successor struct {
	cmd       *exec.Cmd
	pid       int
	link      *os.File
	waiters   []chan<- error
	abandoned bool // a stop began: the wait for its word was cut short
	now       bool // and it was a stop at once
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
	var err error
	switch {
	case ms.stopping || ms.draining != nil:
		err = errors.New("the pool is stopping")
	case ms.cfg.predecessor.pending():
		err = errors.New("this master has not taken over from the one it succeeds yet")
	}
	var s *successor
	if err == nil {
		s, err = ms.startSuccessor()
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrUpgrade, err)
		ms.log.Error("prefork: cannot upgrade", "err", err)
		if waiter != nil {
			waiter <- err
		}
		return
	}
	if waiter != nil {
		s.waiters = append(s.waiters, waiter)
	}
	ms.upgrading = s
	ms.log.Info("prefork: upgrading: a new master starts", "pid", s.pid, "program", s.cmd.Path)
	// The deadline is set here, on the loop, so that a stop's (see
	// abandonUpgrade) always comes after it.
	if ms.cfg.startTimeout > 0 {
		s.link.SetReadDeadline(time.Now().Add(ms.cfg.startTimeout))
	}
	ms.watchers.Go(func() { ms.upgradeDone <- awaitSuccessor(s.link) })
}

// startSuccessor starts the program as a new master, with the sockets.
func (ms *master) startSuccessor() (*successor, error) {
	link, theirs, err := sys.Socketpair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	u := wire.Upgrade{}
	files := []*os.File{theirs}
	for _, l := range ms.listeners {
		if l.program {
			continue // the new program makes its own
		}
		u.Sockets = append(u.Sockets, wire.UpgradeSocket{
			Name: l.name, Key: l.key, FD: wire.FDFirstUpgradeSocket + len(files) - 1, Owned: !l.adopted || l.pendingOwn,
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
		Path: startedAs, Args: os.Args, Env: env,
		Stdout: os.Stdout, Stderr: os.Stderr,
		ExtraFiles: files,
	}
	if err := cmd.Start(); err != nil {
		link.Close()
		return nil, err
	}
	return &successor{cmd: cmd, pid: cmd.Process.Pid, link: link}, nil
}

// startedAs is the file to run as a successor: the one this process was
// started from, by the path it was started by, so that a deploy that then
// switches a symbolic link, or renames a new binary into place, is picked
// up (os.Executable names the file that runs now). It is resolved as the
// package initializes, before the program can change its directory, and
// kept only if it is the file that runs; otherwise it is os.Executable's.
var startedAs = programPath()

func programPath() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	path := os.Args[0]
	if !strings.Contains(path, "/") {
		if path, err = exec.LookPath(path); err != nil {
			return exe
		}
	}
	if path, err = filepath.Abs(path); err != nil {
		return exe
	}
	runs, err1 := os.Stat(exe)
	named, err2 := os.Stat(path)
	if err1 != nil || err2 != nil || !os.SameFile(runs, named) {
		return exe
	}
	return path
}

// awaitSuccessor waits until the successor says, on link, that its pool is
// ready (nil), or until it fails, or the read's deadline passes: the
// loop's StartTimeout, or a stop's (see upgraded for the words).
func awaitSuccessor(link *os.File) error {
	var b [1]byte
	n, err := link.Read(b[:])
	switch {
	case n == 1:
		return nil
	case err == nil:
		return io.ErrUnexpectedEOF
	}
	return err
}

// upgraded takes the outcome of an upgrade. On success the old master gives
// the successor the sockets and stops; otherwise it stops the successor.
func (ms *master) upgraded(err error) {
	s := ms.upgrading
	ms.upgrading = nil
	switch {
	case err == nil && (ms.stopping || ms.draining != nil):
		err = errors.New("the pool began to stop meanwhile")
	case err == nil:
		if _, werr := s.link.Write([]byte{1}); werr != nil { // the sockets are the successor's
			err = fmt.Errorf("the new master (pid %d) is gone: %w", s.pid, werr)
		}
	case errors.Is(err, os.ErrDeadlineExceeded) && s.abandoned:
		err = fmt.Errorf("the pool began to stop before the new master (pid %d) was ready", s.pid)
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("the new master (pid %d) was not ready within StartTimeout (%v)", s.pid, ms.cfg.startTimeout)
	default:
		err = fmt.Errorf("the new master (pid %d) exited before its pool was ready", s.pid)
	}
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrUpgrade, err)
		if ms.stopping || ms.draining != nil {
			ms.log.Warn("prefork: upgrade abandoned", "err", err)
		} else {
			ms.log.Error("prefork: upgrade failed; serving on", "err", err)
		}
		ms.dismiss(s)
	} else {
		s.link.Close()
		s.cmd.Process.Release() // this process may outlive its use of it; the new master is on its own
		ms.log.Info("prefork: upgraded: the new master serves; stopping", "pid", s.pid)
		for _, l := range ms.listeners {
			l.adopted = true // the new master's now: intake, queue and file stay as they are
		}
		// From now on the service manager hears from the new master:
		// this one's stop is not the service's.
		ms.sd.tell(fmt.Sprintf("MAINPID=%d", s.pid), "")
		ms.sd.close()
		ms.sd = notifier{}
		ms.drained = true // nothing to drain: the sockets serve on
		ms.stop(ActionStop, nil)
	}
	for _, w := range s.waiters {
		w <- err
	}
}

// dismiss stops a successor that will not take over, and closes the link
// once it has exited: until then the sockets stay this master's, and the
// successor leaves them as they are.
func (ms *master) dismiss(s *successor) {
	sig := syscall.SIGTERM
	if s.now {
		sig = syscall.SIGKILL
	}
	s.cmd.Process.Signal(sig)
	ms.dismissed = append(ms.dismissed, s.cmd.Process) // for a stop at once
	ms.watchers.Go(func() {
		defer s.link.Close()
		exited := make(chan struct{})
		go func() { s.cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(ms.cfg.shutdownTimeout + killGrace):
			s.cmd.Process.Kill() // its children follow (parent-death signal, end of their status sockets)
			<-exited
		}
	})
}

// abandonUpgrade cuts short the wait for a successor when a stop begins:
// the loop then stops it (at once, with now).
func (ms *master) abandonUpgrade(now bool) {
	if now {
		for _, p := range ms.dismissed {
			p.Kill() // already reaped: an error, nothing more
		}
	}
	s := ms.upgrading
	if s == nil || s.abandoned && !now {
		return
	}
	s.abandoned, s.now = true, s.now || now
	s.link.SetReadDeadline(time.Now())
}

// predecessor is what a master that upgraded handed this process, read
// once per process, as systemd's sockets are.
type predecessor struct {
	sockets []wire.UpgradeSocket // until a master has taken them
	link    *os.File             // to the old master, until it has given the sockets
	err     error
}

// handedOver is read as the package initializes, as a child's handover
// is, before the program can start processes that would inherit the
// descriptors: they are marked close-on-exec at once.
var handedOver = takePredecessor()

func takePredecessor() *predecessor {
	value, ok := os.LookupEnv(wire.EnvUpgrade)
	if !ok {
		return &predecessor{}
	}
	os.Unsetenv(wire.EnvUpgrade)
	u, err := wire.DecodeUpgrade(value)
	if err == nil {
		for _, s := range u.Sockets {
			if err = sys.Inherited(s.FD); err != nil { // close-on-exec: for this process only
				break
			}
		}
	}
	var link *os.File
	if err == nil {
		link, err = sys.InheritedStatus(wire.FDUpgradeLink)
	}
	if err != nil {
		return &predecessor{err: fmt.Errorf("%s: %w", wire.EnvUpgrade, err)}
	}
	return &predecessor{sockets: u.Sockets, link: link}
}

// pending reports whether this master has a predecessor that has not given
// it the sockets yet.
func (p *predecessor) pending() bool { return p != nil && p.link != nil }

// takeOver tells the old master that this pool is ready, and waits, on a
// goroutine of the master's, for its answer: then the sockets it created
// are this master's (see tookOver). It does nothing without a predecessor.
func (ms *master) takeOver() {
	p := ms.cfg.predecessor
	if !p.pending() {
		return
	}
	if _, err := p.link.Write([]byte{1}); err != nil {
		ms.log.Warn("prefork: cannot tell the previous master that the pool is ready", "err", err)
	}
	link := p.link
	ms.watchers.Go(func() {
		var b [1]byte
		n, err := link.Read(b[:])
		// Its word; or its end (end of file, or a reset when it died with
		// the ready word unread): it is gone. Not this master's own
		// release of the link.
		if n == 1 || !errors.Is(err, os.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
			ms.handedOff <- struct{}{}
		}
	})
}

// tookOver makes the sockets that the old master created this master's,
// and removes the files of those of its Unix sockets that this master does
// not serve.
func (ms *master) tookOver() {
	ms.cfg.predecessor.release()
	for _, l := range ms.listeners {
		if l.pendingOwn {
			l.pendingOwn, l.adopted = false, false
		}
	}
	for _, h := range ms.cfg.unusedHanded {
		network, addr, ok := strings.Cut(h.Key, " ")
		served := slices.ContainsFunc(ms.listeners, func(l *listener) bool { return l.addr.String() == addr })
		if ok && h.Owned && sys.IsUnix(network) && !served {
			sys.RemoveSocketFile(network, addr)
		}
	}
	if ms.stopping { // its stop began before: it closes their intake now
		ms.closeIntake()
	}
	ms.sd.open(ms.log, ms.sdWhere) // silent until now: the old master spoke for the service
	if ms.stopping {
		ms.notifyStopping()
	} else {
		ms.notifyReady()
	}
	ms.log.Info("prefork: took over from the previous master")
}

// release ends the link to the old master: its word has come, or this
// master stops (cutting short the wait for it).
func (p *predecessor) release() {
	if p.pending() {
		p.link.SetReadDeadline(time.Now())
		p.link.Close()
		p.link = nil
	}
}
