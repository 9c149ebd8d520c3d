package prefork

import (
	"context"
	"net"
	"os"
	"strconv"
	"syscall"
)

// Child serves requests in a child process, one at a time. NewChild makes one
// Child per child process. ProcessRequest is the only required method; each
// optional hook is an interface of its own below, found by a type assertion,
// as net/http finds an http.Flusher.
//
// Threading: every Child method is called from the goroutine that called
// Manager.Run in the child process, one after another, never concurrently.
type Child interface {
	// ProcessRequest serves one request: for TCP, the whole connection,
	// which is closed when ProcessRequest returns. ctx is cancelled only
	// when the child must stop now (Manager.ShutdownTimeout has run out
	// during a stop); r.Stopping says when the child is to leave (a
	// graceful stop, or its retirement), for a long-lived connection. A
	// returned error is logged with the child's pid and the remote address,
	// and the child goes on with the next request.
	ProcessRequest(ctx context.Context, r *Request) error
}

// Initializer is implemented by a Child that prepares itself once per child
// process, before its first request (py-prefork-server's child_init). An
// error ends the child: Run returns it in that child, and the master logs
// the child's exit and, if no child ever starts, gives up.
type Initializer interface {
	Initialize(ctx context.Context) error
}

// PreBinder and PostBinder are implemented by a Child that wants to know when
// it binds sockets of its own. They are called only in reuse-port mode,
// where each child binds; otherwise the master binds, and calls
// ManagerHooks.PreBind and PostBind. PreBind runs once, before the first
// socket is bound.
type PreBinder interface {
	PreBind(ctx context.Context) error
}

// PostBinder is implemented by a Child that wants the address its own
// socket is bound to, in reuse-port mode; see PreBinder. With several
// sockets (Manager.Sockets) it runs for each, in their order.
type PostBinder interface {
	PostBind(ctx context.Context, addr net.Addr) error
}

// PostAccepter is implemented by a Child that wants to see a connection as
// soon as it is accepted, before AllowDeny. An error closes the connection
// and skips the request; it is logged.
type PostAccepter interface {
	PostAccept(ctx context.Context, r *Request) error
}

// AllowDenier is implemented by a Child that filters requests, for example
// by r.RemoteAddr. A request it does not allow goes to RequestDenied (if the
// Child implements RequestDenier) and is then closed, without
// ProcessRequest.
type AllowDenier interface {
	AllowDeny(ctx context.Context, r *Request) (allow bool)
}

// RequestDenier is implemented by a Child that answers denied requests, for
// example with an error message, before the connection is closed.
type RequestDenier interface {
	RequestDenied(ctx context.Context, r *Request)
}

// PostProcessor is implemented by a Child that wants to act after every
// request, once its connection is closed, for example to log it. err is why
// the request ended: what ProcessRequest returned, ErrRequestDenied for a
// request that AllowDeny refused, or the error of PostAccept.
type PostProcessor interface {
	PostProcessRequest(ctx context.Context, r *Request, err error)
}

// Shutdowner is implemented by a Child that cleans up before its process
// exits. err is why the child stops: nil for a normal end (retired, request
// limit reached, the pool stops), otherwise the error that ended it.
type Shutdowner interface {
	Shutdown(ctx context.Context, err error)
}

// ManagerHooks are the master's lifecycle hooks, in the order in which they
// are called. A nil hook is skipped. A hook that returns an error stops Run,
// which stops any children already started and returns that error, wrapped.
//
// Threading: all hooks run on the goroutine that called Manager.Run in the
// master, which also runs the pool; a hook that blocks delays spawning and
// the handling of children's exits, and one that calls Shutdown waits for
// itself. None is called in a child. ChildStarted, ChildExited and
// PoolResized run at every start and exit: keep them short (count, log, send on a buffered
// channel); a panic in them is logged and the pool goes on.
type ManagerHooks struct {
	// PreBind runs once before the master binds its sockets. It is not
	// called when the master is given every socket it serves
	// (Manager.Listener, or systemd's): nothing is bound.
	PreBind func(ctx context.Context) error
	// PostBind runs once the socket is bound; addr is the bound address,
	// with the port the system chose if Manager.Addr had port 0. For a
	// socket given to the master, it runs once the master has taken it,
	// with the address the socket is bound to: a program learns where it
	// serves, and can drop privileges there either way. With several
	// sockets (Manager.Sockets) it runs for each, in their order, once all
	// are bound.
	PostBind func(ctx context.Context, addr net.Addr) error
	// PreSignalSetup and PostSignalSetup run before and after the master
	// starts catching SIGINT, SIGTERM and SIGHUP.
	PreSignalSetup  func(ctx context.Context) error
	PostSignalSetup func(ctx context.Context) error
	// PreInitChildren runs before the first children are started.
	PreInitChildren func(ctx context.Context) error
	// PostInitChildren runs once MinServers children have started and
	// are ready to serve.
	PostInitChildren func(ctx context.Context) error
	// PreLoop runs right after PostInitChildren, as the master enters its
	// loop of keeping the pool sized.
	PreLoop func(ctx context.Context) error
	// PreServerClose runs during a stop, after every child has exited and
	// before the listener is closed. Its ctx is not cancelled.
	PreServerClose func(ctx context.Context)
	// Signal decides what SIGHUP, SIGINT, SIGTERM and SIGUSR2 do. stopping says
	// whether an earlier signal has already begun a stop. Nil means DefaultSignal. To
	// add to the default, wrap it:
	//
	//	Signal: func(sig os.Signal, stopping bool) prefork.SignalAction {
	//		if sig == syscall.SIGHUP {
	//			reloadConfig()
	//		}
	//		return prefork.DefaultSignal(sig, stopping)
	//	}
	Signal func(sig os.Signal, stopping bool) SignalAction

	// ChildStarted runs when a child's process has started (before it is
	// ready), with its pid.
	ChildStarted func(pid int)
	// ChildExited runs when the master has reaped a child: why it exited,
	// and how (its exit status, or nil for status 0).
	ChildExited func(pid int, reason ExitReason, err error)
	// PoolResized runs when the number of children has changed (children
	// being started count), once the master has handled what changed it:
	// starts and exits that come together are reported once, with the new
	// number; the last report, at the end of a stop, is 0.
	PoolResized func(children int)
}

// SignalAction is what the master does after a signal.
type SignalAction int

const (
	// ActionContinue leaves the pool running.
	ActionContinue SignalAction = iota
	// ActionStop stops taking requests, lets requests in flight
	// finish for up to Manager.ShutdownTimeout, then stops.
	ActionStop
	// ActionStopNow kills every child at once and stops.
	ActionStopNow
	// ActionRestart replaces every child, a few at a time, without
	// failing a request: see Manager.RestartChildren.
	ActionRestart
	// ActionUpgrade starts the program's binary as a new master that
	// takes over the sockets, and stops this one once the new pool is
	// ready: see Manager.Upgrade.
	ActionUpgrade
)

// String names the action for logs.
func (a SignalAction) String() string {
	switch a {
	case ActionContinue:
		return "continue"
	case ActionStop:
		return "stop gracefully"
	case ActionStopNow:
		return "stop now"
	case ActionRestart:
		return "restart children"
	case ActionUpgrade:
		return "upgrade"
	}
	return "SignalAction(" + strconv.Itoa(int(a)) + ")"
}

// DefaultSignal is the default ManagerHooks.Signal: SIGINT and SIGTERM stop
// gracefully, and at once if a stop is already under way (so a second ^C
// does not wait for slow requests); SIGUSR2 upgrades to the program's
// binary as it is on disk (see Manager.Upgrade), as nginx's and gunicorn's
// masters do; SIGHUP changes nothing, and the master logs it.
func DefaultSignal(sig os.Signal, stopping bool) SignalAction {
	switch sig {
	case syscall.SIGINT, syscall.SIGTERM:
		if stopping {
			return ActionStopNow
		}
		return ActionStop
	case syscall.SIGUSR2:
		if !stopping {
			return ActionUpgrade
		}
	}
	return ActionContinue
}
