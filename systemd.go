package prefork

import (
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prefork-go/prefork/internal/sdnotify"
	"github.com/prefork-go/prefork/internal/wire"
	"golang.org/x/sys/unix"
)

// The service manager's two protocols: socket activation (sd_listen_fds(3))
// hands the master its socket, and notifications (sd_notify(3)) tell the
// service manager what the master does. Both are environment variables and
// descriptors, and work the same under any service manager that sets them.

// Socket activation's environment. The passed descriptors start at 3.
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"
	listenFDsStart   = 3
)

// serviceManagerEnv is what a service manager tells the master alone: the
// master strips it from its children's environment. The children serve
// the socket the master hands them, and only the main process may notify
// (NotifyAccess=main).
var serviceManagerEnv = []string{
	envListenPID, envListenFDs, envListenFDNames,
	sdnotify.EnvSocket, sdnotify.EnvWatchdogUsec, sdnotify.EnvWatchdogPID,
}

// passedSockets are the sockets that a service manager passed this
// process, and their names.
type passedSockets struct {
	fds   []int
	names []string
	err   error // the variables are malformed
}

// systemdSockets reads the sockets that systemd passed, once per process,
// when a master first needs them: it removes the variables from the
// environment, as sd_listen_fds(3) does when asked to, so that programs the
// process starts do not take them for their own, and marks the descriptors
// close-on-exec for the same reason (each master hands its children a
// duplicate of its own). The descriptors stay open for the life of the
// process: several Managers can serve them, one after another or each its
// own, and the socket outlives every Run.
var systemdSockets = sync.OnceValue(func() passedSockets {
	pid, n, names := os.Getenv(envListenPID), os.Getenv(envListenFDs), os.Getenv(envListenFDNames)
	for _, env := range []string{envListenPID, envListenFDs, envListenFDNames} {
		os.Unsetenv(env)
	}
	p := parsePassedSockets(pid, n, names, os.Getpid())
	for _, fd := range p.fds {
		unix.CloseOnExec(fd)
	}
	return p
})

// parsePassedSockets reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES for
// the process self. Variables meant for another process (LISTEN_PID names
// it) pass nothing. Names that are missing are "unknown", as systemd calls
// a socket it has no name for.
func parsePassedSockets(pid, n, names string, self int) passedSockets {
	if pid == "" || n == "" {
		return passedSockets{}
	}
	if p, err := strconv.Atoi(pid); err != nil || p <= 0 {
		return passedSockets{err: fmt.Errorf("%s=%q is not a process id", envListenPID, pid)}
	} else if p != self {
		return passedSockets{}
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 0 || count > 1<<16 {
		return passedSockets{err: fmt.Errorf("%s=%q is not a number of descriptors", envListenFDs, n)}
	}
	var p passedSockets
	given := strings.Split(names, ":")
	for i := range count {
		p.fds = append(p.fds, listenFDsStart+i)
		name := "unknown"
		if i < len(given) && given[i] != "" {
			name = given[i]
		}
		p.names = append(p.names, name)
	}
	return p
}

// String lists the sockets as LISTEN_FDNAMES does, for messages.
func (p passedSockets) String() string {
	return envListenFDNames + "=" + strings.Join(p.names, ":")
}

// notifier tells the service manager what the master does, when it asked
// to be told (NOTIFY_SOCKET, as systemd sets it for Type=notify): READY=1
// once the pool is ready, RELOADING=1 and READY=1 around a restart of the
// children, STOPPING=1, a STATUS= line when the pool changes, and
// WATCHDOG=1 when a watchdog is set. Its zero value tells nothing. Only
// the loop uses it.
type notifier struct {
	sock     *sdnotify.Socket // nil: nobody to tell
	log      *slog.Logger
	where    string       // the listener, for STATUS
	watchdog *time.Ticker // nil without a watchdog
	ready    bool         // READY=1 was sent
	reload   bool         // RELOADING=1 was sent, and READY=1 not yet
	stopping bool         // STOPPING=1 was sent
	status   string       // the last STATUS
	failing  bool         // the last send failed: logged once
}

// open reads the service manager's variables. where names the listener.
func (n *notifier) open(log *slog.Logger, where string) {
	n.log, n.where = log, where
	sock, err := sdnotify.New(os.Getenv(sdnotify.EnvSocket))
	if err != nil {
		log.Warn("prefork: cannot notify the service manager", "err", err)
	}
	if n.sock = sock; sock == nil {
		return
	}
	interval, err := sdnotify.WatchdogInterval(os.Getenv(sdnotify.EnvWatchdogUsec), os.Getenv(sdnotify.EnvWatchdogPID), os.Getpid())
	if err != nil {
		log.Warn("prefork: ignoring the service manager's watchdog", "err", err)
	}
	if interval > 0 {
		n.watchdog = time.NewTicker(interval)
	}
	log.Debug("prefork: notifying the service manager", "socket", sock.String(), "watchdog", interval)
}

// watchdogTicks returns the channel that says when to send WATCHDOG=1, or
// nil.
func (n *notifier) watchdogTicks() <-chan time.Time {
	if n.watchdog == nil {
		return nil
	}
	return n.watchdog.C
}

func (n *notifier) close() {
	if n.watchdog != nil {
		n.watchdog.Stop()
	}
}

// tell sends state (assignments separated by newlines; may be empty) and,
// unless it is empty, the status.
func (n *notifier) tell(state, status string) {
	if n.sock == nil {
		return
	}
	if status != "" {
		n.status = status
		state = strings.TrimPrefix(state+"\n"+sdnotify.Status(status), "\n")
	}
	err := n.sock.Send(state)
	switch {
	case err != nil && !n.failing:
		n.log.Warn("prefork: cannot notify the service manager", "socket", n.sock.String(), "err", err)
	case err == nil && n.failing:
		n.log.Info("prefork: notifying the service manager again", "socket", n.sock.String())
	}
	n.failing = err != nil
}

// where names the sockets in a STATUS= line.
func where(ls []wire.Listener) string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = l.Network + " " + l.Addr
	}
	return strings.Join(names, ", ")
}

// sdStatus describes the pool in a STATUS= line.
func (ms *master) sdStatus() string {
	if ms.stopping {
		return fmt.Sprintf("stopping on %s: %d children left", ms.sd.where, len(ms.children))
	}
	state := "serving"
	switch {
	case !ms.sd.ready:
		state = "starting"
	case ms.sd.reload:
		state = "restarting children"
	}
	return fmt.Sprintf("%s on %s: %d children, %d ready", state, ms.sd.where, len(ms.children), ms.readyCount())
}

// notifyPool runs at each look at the pool: it sends the pool's status
// when it has changed, and READY=1 when a restart of the children is done:
// none of those started before it takes new requests any more (none told
// to retire is still to answer; a busy one leaves when its request ends,
// and waiting for it would hold a reload as long as its client keeps the
// connection), and MinServers children are ready.
func (ms *master) notifyPool() {
	if ms.sd.sock == nil {
		return
	}
	if ms.sd.reload && !ms.restarting && !ms.stopping && !slices.ContainsFunc(ms.children, ms.unanswered) && ms.readyCount() >= ms.cfg.minServers {
		ms.sd.reload = false
		ms.sd.tell("READY=1", ms.sdStatus())
	} else if status := ms.sdStatus(); status != ms.sd.status {
		ms.sd.tell("", status)
	}
}

// notifyReady says that the pool is ready, once.
func (ms *master) notifyReady() {
	ms.sd.ready = true
	ms.sd.tell("READY=1", ms.sdStatus())
}

// notifyReloading says that a restart of the children begins.
func (ms *master) notifyReloading() {
	if !ms.sd.ready || ms.stopping {
		return // READY=1 comes when the pool is ready
	}
	ms.sd.reload = true
	ms.sd.tell(sdnotify.Reloading(), ms.sdStatus())
}

// notifyStopping says that the pool stops, once.
func (ms *master) notifyStopping() {
	if ms.sd.stopping {
		return
	}
	ms.sd.stopping = true
	ms.sd.tell("STOPPING=1", ms.sdStatus())
}
