// Package prefork runs a pool of child processes that serve network requests
// one at a time each, as Apache's prefork MPM, Perl's Net::Server::PreFork and
// the Python library py-prefork-server do. It serves TCP, UDP and Unix
// sockets, from one socket shared by all children or, in reuse-port mode,
// from a socket of each child's own.
//
// A program configures a Manager and calls Run. In the master process, Run
// binds the listening socket, then starts children by executing the program
// again, with the same arguments, handing each child the socket. In each
// child, the same call to Run finds that it runs in a child and serves
// requests instead: it calls the Child hooks and returns when the child is
// done. So the code before Run runs in every process, the master and each
// child; guard code that must run only once with IsChild.
//
//	type echo struct{}
//
//	func (echo) ProcessRequest(ctx context.Context, r *prefork.Request) error {
//		_, err := io.Copy(r.Conn, r.Conn)
//		return err
//	}
//
//	func main() {
//		m := &prefork.Manager{Addr: "127.0.0.1:9000", NewChild: func() prefork.Child { return echo{} }}
//		if err := m.Run(context.Background()); err != nil {
//			log.Fatal(err)
//		}
//	}
//
// A pool can serve several sockets at once (Manager.Sockets): two ports,
// IPv4 and IPv6, TCP and a Unix socket, TCP and UDP. Each child serves all
// of them, one request at a time, taking its requests from them in turn,
// and Request.SocketName says which socket a request came from.
//
// Manager.RunInProcess runs one child in the calling process instead, on a
// listener of the caller's, with no master and no fork: to test a Child
// with go test (package preforktest builds test servers on it), or to step
// through it in a debugger.
//
// # The pool
//
// Each child marks itself idle or busy on a scoreboard in memory shared with
// the master. While children are busy the master looks at the pool every
// 20 ms; when none is, the first child to take a request wakes it. The
// master keeps between MinServers and MaxServers children, and between
// MinSpareServers and MaxSpareServers spare ones, and sizes the pool by what
// it sees: connections waiting in the listeners' queues, how much of the
// machine's CPU is idle, and whether busy children run or sleep.
//
// When connections wait that no child will take soon, and another child
// helps (some CPU is idle, or most busy children are asleep in their own
// I/O, such as a database call, or held by clients that keep their
// connections open, or no request has been taken for a while), the pool
// grows by as many children as connections wait, at once. When the cores
// are saturated by children that run, another child would only turn
// connections that a busy child finds queued into sleeps and wake-ups: the
// pool does not grow, and children above MinServers are parked. A parked
// child is ready and counts as spare, but it is out of the listener's
// queue: it takes no connection and costs nothing until the master unparks
// it. Spare children start parked. Surplus spare children retire, a few a
// second, once more than MaxSpareServers of them have been spare for a
// second. Idle children that take nothing for a second while connections
// wait (stopped, say) are logged and do not count. A child exits after
// MaxRequests requests and is replaced. One that has lived MaxLifetime, or
// whose memory has grown past MaxChildMemory (Linux), finishes its request
// and is replaced, a few at a time, as RestartChildren does. A child that
// dies in any way is replaced; the master itself runs no user code but its
// hooks.
//
// The queue, the CPU and the children's states are read on Linux; children
// are parked only where the master shares its listener with them and can
// read its queue (TCP, UDP and Unix sockets, not reuse-port mode; a Unix
// stream socket's queue is read through the kernel's socket diagnostics).
// Elsewhere the pool keeps MinSpareServers idle children that take
// requests, and grows when none is left.
//
// Children wait for connections without waking each other: on Linux each
// child waits in its own epoll set with EPOLLEXCLUSIVE, so the kernel wakes
// one idle child per connection. Elsewhere every idle child wakes and one of
// them wins the accept.
//
// A child waits thousands of times a second, and a blocking system call
// costs a Go program more than the call: the runtime's monitor thread
// takes the P away and wakes again and again. So on Linux a child that
// runs no goroutines but its own waits (for a connection, and inside
// Request.Conn's Read and Write) without the runtime's help, in short
// slices that keep its P, for up to 200 ms before it sleeps as any Go
// program does, and only in a streak of short waits: a new child, and one
// after an idle spell, waits the ordinary way until a wait ends within
// 200 ms. Request.Conn is therefore the package's own net.Conn, not
// a *net.TCPConn. While the child runs other goroutines (started before
// Run, or by a hook or a handler), its waits are ordinary ones.
//
// # Stopping
//
// SIGINT, SIGTERM, Manager.Shutdown and the cancellation of Run's context
// stop the pool gracefully: the listener takes no new connection (TCP and
// UDP on Linux, and Unix sockets, whose file is removed; TCP and UDP
// elsewhere take them until the socket closes), children finish the
// requests they have and serve those already queued, and exit. A socket
// the master did not create (Manager.Listener, or systemd's) is left as it
// is: it takes connections on, and what is queued when the children have
// left waits for its next server. When Manager.ShutdownTimeout has run out, the
// requests' contexts are cancelled, and a second later the children that
// are left are killed. A second SIGINT or SIGTERM, or Manager.Close, stops
// at once. SIGHUP is logged and otherwise ignored;
// SIGUSR2 upgrades (see "Upgrading");
// ManagerHooks.Signal changes what each signal does. A child that receives
// SIGINT or SIGTERM itself (a terminal's ^C, or systemd, reach the whole
// process group) finishes its request and exits too.
//
// A Manager runs once. After a stop by a signal or by Run's context, Run
// returns nil; after Shutdown or Close, ErrManagerClosed, also when they
// won a race with Run's start (Run then starts nothing), and a later Run
// returns ErrManagerClosed at once. Run with a context that is already
// done returns the context's error and starts nothing.
//
// Children never outlive the master: on Linux the kernel sends them SIGTERM
// when the master dies (they finish the request in hand, within
// ShutdownTimeout), and everywhere they notice the end of their status
// socket.
//
// # Watching
//
// Manager.Stats returns a snapshot of the pool: its children, what each
// does and (on Linux) the memory it holds, each socket's queue, and the
// children started and exited, by reason. SIGUSR1 logs it;
// ManagerHooks.ChildStarted and ChildExited report each start and exit.
// Manager.SetLimits changes the pool's size limits while it runs, and
// SIGTTIN and SIGTTOU add one child to MinServers or take one away.
// Manager.SlowRequest makes a child log its goroutines' stacks when a
// request runs too long.
//
// # Faults
//
// A panic in a hook is recovered and ends that child with a *PanicError;
// the master replaces it. Manager.RequestTimeout bounds a request, and the
// master kills a child that overruns it. Children that fail to start
// (Initialize fails, or they are not ready within Manager.StartTimeout), or
// crash soon after, are restarted with a growing back-off, one step per
// attempt, and Run gives up with ErrChildStart if none has ever started
// after children have failed for five seconds. A child that cannot accept for
// lack of descriptors or memory leaves after half a second and is
// replaced; one that stopped taking requests and does not exit is killed
// ShutdownTimeout and a second later. Manager.RestartChildren replaces
// every child without failing a request.
//
// # Upgrading
//
// SIGUSR2, or Manager.Upgrade, replaces the running program with the
// binary now on disk without refusing a connection: the master starts the
// new binary as a new master and hands it its sockets; the new master
// starts its pool on them; once that pool is ready, the old master stops
// gracefully, leaving the sockets and what waits in their queues to the new
// children. If the new master fails, the old pool serves on.
//
// # Under systemd
//
// Socket activation and notifications need no code. Started with sockets
// (a .socket unit, LISTEN_FDS), the master serves the ones systemd passed
// instead of binding Addr, and learns their networks and addresses from
// them (Manager.ListenerName picks some by name; with Manager.Sockets, each
// Socket takes the ones of its name). With NOTIFY_SOCKET set
// (Type=notify), it tells systemd when the pool is ready, restarts its
// children and stops, with the pool's status, and feeds the watchdog
// (WatchdogSec=). Children see none of these variables. The README has a
// pair of units, and notes on Kubernetes.
//
// # Running as root
//
// A master started as root binds the socket, a privileged port too, and
// starts its children as Manager.User and Group, with no supplementary
// groups: a child never runs as root, and cannot become root again.
// Manager.SocketMode, SocketUser and SocketGroup give the file of a Unix
// socket the permissions, owner and group that its clients need, such as a
// proxy that runs as another user.
//
// # Platforms
//
// prefork needs a Unix system. Linux is the supported target: the exclusive
// wake-up of one child per connection, the parent-death signal and the
// re-execution of the master's own binary file through /proc/self/exe,
// the waits that keep the P, the pool's reading of the queue, the CPU
// and the children's states, and the children's memory (MaxChildMemory,
// ChildStats.RSS) are Linux-only. The package builds on
// macOS and the BSDs, where children poll the listener (all idle children
// wake for each connection) with ordinary system calls, notice a dead
// master only through their status socket, and a respawn runs the file at
// the program's path.
package prefork

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// Errors returned by Run. Each is wrapped with details; test for them with
// errors.Is.
var (
	// ErrInvalidConfig: a Manager field has a value that cannot work. The
	// message names the field and what to change. Nothing was started.
	ErrInvalidConfig = errors.New("prefork: invalid configuration")
	// ErrChildStart: children exit before they are ready, again and again
	// for five seconds, and none has ever become ready, so the master gives
	// up. Each child logs its own error; the master's error carries the
	// last exit status.
	ErrChildStart = errors.New("prefork: children fail to start")
	// ErrMasterGone is returned by Run in a child whose master has died.
	ErrMasterGone = errors.New("prefork: master process is gone")
	// ErrManagerClosed is returned by Run after Shutdown or Close, and at
	// once by a Run that starts after them.
	ErrManagerClosed = errors.New("prefork: Manager closed")
	// ErrRequestDenied is what PostProcessRequest receives for a request
	// that AllowDeny refused.
	ErrRequestDenied = errors.New("prefork: request denied")
)

// Request is one request given to a Child: for a stream network ("tcp",
// "unix"), one accepted connection; for a packet network ("udp",
// "unixgram"), one datagram.
type Request struct {
	// Conn is the accepted connection, for stream networks; nil for
	// packet networks. The child closes it after the request.
	//
	// It is not a *net.TCPConn: the child waits on it without the Go
	// netpoller, which costs a process that serves one connection at a
	// time more than the work itself (see "Performance" in the README).
	// Besides net.Conn it has CloseRead, CloseWrite and SyscallConn, and
	// it has package net's defaults for accepted TCP connections:
	// TCP_NODELAY and keep-alive probes after 15 s.
	Conn net.Conn
	// Data is the datagram, for packet networks; nil for stream networks.
	// It is valid until ProcessRequest (or RequestDenied) returns: copy
	// what must live longer.
	Data []byte
	// RemoteAddr is the client's address: a *net.TCPAddr, *net.UDPAddr
	// or *net.UnixAddr. It is nil for a Unix datagram from an unbound
	// socket, which cannot be answered.
	RemoteAddr net.Addr
	// Network is the socket's network, such as "tcp" or "udp6".
	Network string
	// SocketName is the name of the socket the request came from: its
	// Socket.Name, or ListenerName, or the name systemd gave it, or else
	// its network and bound address, such as "tcp 127.0.0.1:9000" (under
	// RunInProcess, the listener's).
	SocketName string
	// Served counts the requests this child process finished before this one.
	Served int

	stopping <-chan struct{}
	reply    func([]byte) error
	inHand   *inHand     // the child's record of it (see Contended)
	seq      uint64      // this request's number in the child, from 1
	waiter   *sys.Waiter // the child's, for requests on connections
}

// Reply answers the client, as py-prefork-server's resp_to does: for a
// stream network it writes b to Conn; for a packet network it sends b as
// one datagram to the sender.
func (r *Request) Reply(b []byte) error {
	if r.reply == nil { // a Request built by hand, as in a handler's test
		if r.Conn == nil {
			return errors.New("prefork: Request has neither a connection nor a sender to reply to")
		}
		_, err := r.Conn.Write(b)
		return err
	}
	return r.reply(b)
}

// Stopping returns a channel that is closed when the child is to leave: the
// pool begins a graceful stop, or the master retires this child (a restart
// of the children, MaxLifetime, MaxChildMemory). A handler that serves a
// long-lived connection should watch it to end at a clean point, or a
// retired child serves that connection, and nothing else, for as long as
// its client keeps it. ProcessRequest's ctx is cancelled only later, when
// the child must stop now; a retired child has no deadline. It is this
// child's news, not the pool's: a health check should not answer from it.
func (r *Request) Stopping() <-chan struct{} { return r.stopping }

// ConnGoroutines tells the child that n goroutines besides the one that
// called ProcessRequest serve this request's connection, each waiting only
// in Conn's Read and Write, or for the others: net/http's connection
// goroutine is one (preforkhttp declares it). The child then keeps its fast
// waits (see the package doc) while they run; otherwise any goroutine
// beyond the child's own makes every wait an ordinary one. Do not count a
// goroutine that waits for anything else, such as another connection or a
// timer: while Conn waits, it could be up to 4 ms late. The count ends with
// the request; it does nothing for datagrams and under RunInProcess.
func (r *Request) ConnGoroutines(n int) {
	if r.waiter != nil {
		r.waiter.Helpers(max(n, 0))
	}
}

// IsChild reports whether this process is a prefork child, started by a
// master. Code before Manager.Run runs in the master and in every child; use
// IsChild to keep some of it to the master (or to children).
func IsChild() bool { return inherited != nil }

// inherited is what a child received from its master, read and removed from
// the environment when the package initializes, so that programs the child
// starts are not taken for children. It is nil in the master. With the
// sockets systemd passed (systemdSockets), it is the only package-level
// state.
var inherited = takeHandover()

type handover struct {
	masterPID int
	status    *os.File
	board     *board.Board
	slot      int
	parked    bool // the child starts parked
	listeners []wire.Listener
	err       error // a handover that cannot be used; Run returns it
}

func takeHandover() *handover {
	version, ok := os.LookupEnv(wire.EnvChild)
	if !ok {
		return nil
	}
	pid, listeners, slot := os.Getenv(wire.EnvMasterPID), os.Getenv(wire.EnvListeners), os.Getenv(wire.EnvBoard)
	parked := os.Getenv(wire.EnvParked) == "1"
	if os.Getenv(wire.EnvMaxProcs) != "" { // the runtime has read it: not for the child's children
		os.Unsetenv("GOMAXPROCS")
	}
	for _, env := range wire.EnvNames {
		os.Unsetenv(env)
	}
	h := &handover{parked: parked}
	sys.SetProcessName(filepath.Base(os.Args[0]))
	if version != strconv.Itoa(wire.Version) {
		h.err = errors.New("prefork: child started by a master of another protocol version " + version)
		return h
	}
	var err error
	if h.masterPID, err = strconv.Atoi(pid); err != nil {
		h.err = errors.New("prefork: bad " + wire.EnvMasterPID + " in a child's environment")
		return h
	}
	// Nothing is touched before the handover is known to be one: a program
	// started by hand with the variables set must not take descriptors 3-5
	// for its own.
	if ppid := os.Getppid(); ppid != h.masterPID {
		h.err = fmt.Errorf("%w: %s is set and %s names process %d, but the parent is %d: unset %s unless a prefork master started this program",
			ErrMasterGone, wire.EnvChild, wire.EnvMasterPID, h.masterPID, ppid, wire.EnvChild)
		return h
	}
	if h.listeners, err = wire.DecodeListeners(listeners); err != nil {
		h.err = fmt.Errorf("prefork: %w", err)
		return h
	}
	var fds []int
	for _, l := range h.listeners {
		if l.FD != 0 {
			fds = append(fds, l.FD)
		}
	}
	if err := sys.CheckHandover(wire.FDStatus, wire.FDBoard, fds); err != nil {
		h.err = fmt.Errorf("prefork: %s is set, but the descriptors are not a master's handover (%w): unset %s unless a prefork master started this program",
			wire.EnvChild, err, wire.EnvChild)
		return h
	}
	if h.status, err = sys.InheritedStatus(wire.FDStatus); err != nil {
		h.err = fmt.Errorf("prefork: status socket: %w", err)
		return h
	}
	if h.board, h.slot, err = openBoard(slot); err != nil {
		h.err = fmt.Errorf("prefork: scoreboard: %w", err)
		return h
	}
	for _, l := range h.listeners {
		if l.FD == 0 {
			continue
		}
		if err := sys.Inherited(l.FD); err != nil {
			h.err = fmt.Errorf("prefork: listener: %w", err)
			return h
		}
	}
	return h
}

// openBoard maps the scoreboard handed over as FDBoard; slot is
// "<index>,<slots>".
func openBoard(slot string) (*board.Board, int, error) {
	index, n, ok := strings.Cut(slot, ",")
	i, err1 := strconv.Atoi(index)
	slots, err2 := strconv.Atoi(n)
	if !ok || err1 != nil || err2 != nil || i < 0 || i >= slots {
		return nil, 0, fmt.Errorf("bad %s %q", wire.EnvBoard, slot)
	}
	if err := sys.Inherited(wire.FDBoard); err != nil {
		return nil, 0, err
	}
	f := os.NewFile(wire.FDBoard, "prefork-board")
	defer f.Close() // the mapping outlives the descriptor
	b, err := board.Open(f, slots)
	return b, i, err
}
