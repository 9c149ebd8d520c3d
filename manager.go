package prefork

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// A Manager runs a prefork server. Configure it, then call Run. Every field
// is optional but NewChild and Addr (or a socket given to serve: Listener,
// or one systemd passed; or Sockets); zero selects the default. Run never writes to
// the Manager.
type Manager struct {
	// Network is "tcp" (the default: IPv4 and IPv6), "tcp4", "tcp6",
	// "udp", "udp4", "udp6", "unix" or "unixgram".
	Network string
	// Addr is the host:port to listen on, or for Unix sockets the path of
	// the socket file (removed when Run returns; a file left by a server
	// that crashed is replaced). Port 0 picks a free port;
	// ManagerHooks.PostBind receives the bound address.
	//
	// Network and Addr are ignored when the master is given its socket:
	// Listener, or one systemd passed (see ListenerName). To serve
	// several sockets, leave them empty and set Sockets.
	Addr string

	// Listener, when set, is a socket for the pool to serve instead of
	// binding Network and Addr: a *net.TCPListener, *net.UnixListener,
	// *net.UDPConn or *net.UnixConn (unixgram), or an *os.File that holds
	// one, such as their File methods return. The master learns the
	// socket's network and address from the socket itself (Stats and
	// ManagerHooks.PostBind show them; PreBind is not called: nothing is
	// bound). A stream socket must be listening.
	//
	// The socket stays the program's: Run works on a duplicate of its
	// descriptor and closes only that. It never removes a Unix socket's
	// file, and it does not stop the socket's intake when the pool stops
	// (see "Stopping" in the package doc): connections that come during
	// the stop, or are still queued when the children have left, stay in
	// its queue for whoever serves it next. Close it once Run has
	// returned, if nothing else will serve it (a *net.UnixListener then
	// removes its file, unless told otherwise by SetUnlinkOnClose).
	//
	// Run makes the socket non-blocking, a mode that every holder of the
	// socket shares, and gives a TCP one the keep-alive and TCP_NODELAY
	// settings that its children's connections have (see Request.Conn).
	// Do not accept on it while Run runs.
	//
	// When Listener is nil and systemd passed sockets (socket activation:
	// LISTEN_PID names this process and LISTEN_FDS counts them), the
	// master serves those, the same way: see ListenerName.
	Listener syscall.Conn

	// ListenerName picks the sockets to serve among those systemd passed:
	// the ones of that name in LISTEN_FDNAMES (FileDescriptorName= in the
	// .socket unit; systemd names a socket after its unit otherwise, all
	// the sockets of a unit alike). Empty, the master serves every socket
	// systemd passed. When none has that name, Run returns an error
	// wrapping ErrInvalidConfig. When systemd passed nothing, or Listener
	// is set, it only names the socket, as Socket.Name does.
	//
	// The master reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES as it
	// first runs in a process, and removes them from the environment, as
	// sd_listen_fds(3) does when asked to, so that the children and the
	// programs the process starts do not take the sockets for theirs; it
	// marks the passed descriptors close-on-exec, and leaves them open. A
	// program that serves another of those sockets itself reads the
	// variables before Run.
	ListenerName string

	// Sockets, when set, are the sockets the pool serves, instead of the
	// one that Network, Addr, Listener and ListenerName describe, which
	// must then be unset: two ports, IPv4 and IPv6, TCP and a Unix
	// socket, TCP and UDP. Each child serves all of them, one request at
	// a time, and Request.SocketName says which one a request came from;
	// the kernel still
	// wakes one idle child per connection. A child takes its requests from
	// the sockets in turn, so that a busy socket does not starve another.
	// Everything said here of the socket holds for each: the master binds
	// them all, or is given some (Socket.Listener, or systemd's, matched
	// by name), calls ManagerHooks.PostBind once for each, and stops the
	// intake of those it created when the pool stops; Backlog and the
	// Socket* fields apply to each it binds, and with ReusePort each
	// child binds all of them. Stats shows each socket's queue.
	Sockets []Socket

	// ReusePort makes each child bind a socket of its own with
	// SO_REUSEPORT (TCP and UDP only), instead of sharing one socket
	// bound by the master. On Linux the kernel then spreads connections
	// evenly over the children, but it does so by hash, busy or not, and a
	// connection still queued on a child's socket when that child exits
	// is lost. The master binds nothing and does not call
	// ManagerHooks.PreBind and PostBind; each child calls its own PreBind
	// and PostBind hooks (PreBinder, PostBinder). Port 0 is resolved once,
	// so that all children share one port. It cannot serve a socket given
	// to the master (Listener, or systemd's).
	ReusePort bool
	// Backlog is the length of the listen queue. Zero means SOMAXCONN;
	// the system caps it (on Linux at net.core.somaxconn). A socket given
	// to the master keeps the backlog it has.
	Backlog int

	// SocketMode is the permissions of the file of the Unix socket the
	// master binds (Network "unix" or "unixgram"): to connect, a client
	// needs write permission on it (Linux checks it; where a system does
	// not, the permissions of the directory above are what holds). Zero
	// leaves the mode that bind gives: 0777 less the master's umask, so
	// 0755 with the usual umask of 022, on which only the file's owner can
	// connect. Only permission bits may be set.
	//
	// SocketUser and SocketGroup are the file's owner and group: a name,
	// which must exist, or a numeric id. Empty leaves them as bind made
	// them, the master's. With SocketMode 0o660 and a SocketGroup of its
	// own, a proxy that runs as another user (say nginx, as www-data, a
	// member of that group) can connect, and other users cannot. To give
	// the file to another user the master must run as root; to give it to
	// another group, as root or as a member of that group.
	//
	// With several sockets (Sockets), they apply to each Unix socket with
	// a file that the master binds, and are refused when there is none.
	//
	// The master sets them right after bind, before the socket listens,
	// so that no client connects before, and before PostBind. Children
	// need no access to the file: they inherit the socket. Run refuses
	// them (ErrInvalidConfig) for another Network, for an abstract socket
	// ("@name", which has no file), and for a socket given to the master:
	// set them where it is made (SocketMode=, SocketUser= and
	// SocketGroup= in a .socket unit).
	SocketMode              os.FileMode
	SocketUser, SocketGroup string

	// User is the user that the children run as, as Apache's User
	// directive: a name, or a numeric id. Group is their group: a name or
	// numeric id, or empty for User's primary group. A numeric id needs
	// no entry in the system's users (containers often run as ids that
	// have none), but then Group must be set; names must exist. Names are
	// looked up as Run starts, with package os/user: through the C
	// library's name services (LDAP, say) in a program built with cgo, in
	// /etc/passwd and /etc/group alone in one built without
	// (CGO_ENABLED=0). Empty, children run as the master does.
	//
	// The master, started as root, binds the socket (a port below 1024
	// works: it binds it as root), then starts each child as User and
	// Group, with no supplementary groups. The new process sets its ids
	// before the program runs, real, effective and saved alike, and the
	// kernel drops root's capabilities with them: a child never runs as
	// root, and cannot become root again. The master stays root, to bind,
	// to signal its children, to remove the socket's file. A child reaches
	// its socket, its status socket and the scoreboard through the
	// descriptors it inherits, whatever the files' permissions; but the
	// program's file must be executable by User (a child runs it again),
	// and what a child opens by path (configuration, logs) it opens as
	// User. Its environment is the master's: HOME still names root's.
	//
	// When the pool stops, a child serves the connections still queued on
	// a Unix socket once it learns that the socket takes no new ones: on
	// Linux from the socket itself; elsewhere by finding its file gone,
	// which a User who may not search the directories above the file
	// cannot see, and then those connections are lost.
	//
	// Run refuses (ErrInvalidConfig): a user or group that does not exist;
	// a Group without a User; User root (uid 0); in a master that does not
	// run as root, a User or Group that is not its own (its own are
	// accepted and change nothing: without privilege it cannot drop its
	// supplementary groups, which the children keep); and ReusePort with
	// a port that User may not bind, below 1024 (on Linux, below
	// net.ipv4.ip_unprivileged_port_start): in reuse-port mode each child
	// binds its own socket, as User. RunInProcess ignores User and Group.
	User, Group string

	// MinServers is the least number of children (default 5) and
	// MaxServers the most (default 20): both count processes, children
	// on their way out included. MinServers children always take
	// requests.
	MinServers, MaxServers int
	// MinSpareServers is the least number of spare children (default 2):
	// idle, or parked (ready, but kept out of the listener's queue until
	// connections wait; see the package doc). When fewer are spare, the
	// master starts more, up to MaxServers. MaxSpareServers is the most
	// (default 10): when more have been spare for a second, a few are
	// retired, never below MinServers.
	MinSpareServers, MaxSpareServers int
	// MaxRequests is how many requests a child serves before it exits and
	// is replaced. Zero means no limit. Denied requests count.
	MaxRequests int

	// MaxRequestsJitter adds a random 0..MaxRequestsJitter to each
	// child's MaxRequests, so that children started together do not all
	// retire at once. Zero means none.
	MaxRequestsJitter int

	// MaxLifetime is how long a child serves, from its start, before it
	// is replaced: it finishes the request in hand and exits, as after
	// MaxRequests (a long-lived connection ends at a clean point if its
	// handler watches Request.Stopping, as preforkhttp's does). Zero means
	// no limit; less than a second is refused.
	// The master replaces such children as RestartChildren does, a few at
	// a time: it retires one only while MinServers other children are
	// ready, and starts the replacement first where it must and can (below
	// MaxServers; a pool at MaxServers retires one child at a time before
	// replacing it). The master checks lifetimes when it looks at the
	// pool, at least once a second, and while children fail to start it
	// replaces none but at the pace of its back-off, so a child may serve
	// somewhat longer. Stats counts these exits as ExitMaxLifetime.
	MaxLifetime time.Duration

	// MaxLifetimeJitter adds a random 0..MaxLifetimeJitter to each
	// child's MaxLifetime, so that children started together are not all
	// due at once. Zero means none.
	MaxLifetimeJitter time.Duration

	// MaxChildMemory is, on Linux, the most memory a child may hold, in
	// bytes of its resident set size (RSS), which counts the pages it
	// shares, such as the program's code (a few MiB for a small Go
	// program). A child that has grown past it finishes its request and
	// is replaced as with MaxLifetime: the defence against handlers that
	// leak slowly. Each child reads its RSS when it is ready and after a
	// request, at most once a second (never while it waits), and puts it
	// on the scoreboard, where the master compares it and Stats shows it;
	// a child that grows within a request is caught after it. Zero means
	// no limit; less than 1 MiB is refused (it counts bytes: 512<<20 is
	// 512 MiB). Where the RSS cannot be read (systems other than Linux,
	// or no /proc) it is ignored, and the master logs a warning. Stats
	// counts these exits as ExitMemoryLimit. A limit that a child passes
	// before its first request would replace every child at once: the
	// master then gives it up, with a warning. It is no bound on a request
	// that allocates fast: for that, see the kernel's memory limits
	// (cgroups, RLIMIT_AS).
	MaxChildMemory int64

	// RequestTimeout bounds one request, when positive. The request's ctx
	// carries that deadline, and its connection's reads and writes fail
	// half a second after it; a child still busy a second after the
	// deadline gets SIGTERM, and SIGKILL a second later, and is replaced.
	// It is the defence against clients and handlers that hold children
	// forever. Zero means no limit.
	RequestTimeout time.Duration

	// DrainDelay, when positive, makes a graceful stop wait that long
	// before it begins (a lame duck): the pool goes on taking and serving
	// connections, so that a load balancer or Kubernetes, which stops
	// sending new ones a little after it sent SIGTERM, can take the server
	// out of rotation first. Stats says Stopping meanwhile, and systemd is
	// told STOPPING=1. A second SIGINT or SIGTERM, or Close, stops at once
	// as ever; Shutdown waits for the drain too. A pool that has not been
	// ready yet (never in rotation) stops without one. Zero means none.
	DrainDelay time.Duration

	// SlowRequest, when positive, is how long a request may run before
	// its child logs the stacks of all its goroutines, once per request,
	// at level Warn with its pid, the client's address and how long the
	// request has run, as PHP-FPM's slow log does: what a slow handler was
	// doing, without stopping it. The master notices within 20 ms; the
	// dump stops the child's goroutines for a moment. Zero means no slow
	// log.
	SlowRequest time.Duration

	// StartTimeout bounds a child's start, from its exec to its first
	// request, Initialize included (default 1 minute; negative: no
	// limit). A child not ready by then is killed and counts as a failed
	// start, as one whose Initialize fails: the pool backs off before the
	// next start, without waiting for children still starting.
	StartTimeout time.Duration

	// ShutdownTimeout bounds a graceful stop (default 30s): when it has
	// run out, children's request contexts are cancelled, and a second
	// later the children that are left are killed. It also bounds a child
	// that leaves the pool by itself (MaxRequests, a restart, surplus): one
	// that has not exited ShutdownTimeout and a second after it took its
	// last request (a Shutdown hook that hangs) is killed, as is one told
	// to retire that has not answered in that time while not busy (a
	// stopped or wedged process).
	ShutdownTimeout time.Duration

	// ChildMaxProcs is GOMAXPROCS in each child. Zero means 1: a child
	// serves one request at a time, and with a single P its scheduler has
	// no idle P to wake threads for, so the pool uses less CPU and memory.
	// Negative means the runtime's default, one per CPU, for handlers that
	// compute in parallel. A GOMAXPROCS environment variable wins. The
	// master passes the value to a child in its environment, so that the
	// child's runtime starts with it (which saves memory), and the child
	// removes it so that programs it starts do not inherit it.
	ChildMaxProcs int

	// ChildTimerSlack is, on Linux, the timer slack of every thread of
	// each child: how late the kernel may end their timed sleeps, so as
	// to group wake-ups (prctl(2), PR_SET_TIMERSLACK). Zero means
	// DefaultChildTimerSlack, 500 µs; negative leaves what the master
	// inherited, usually 50 µs. It matters for handlers that wait on
	// connections of their own, such as a database's: each of those
	// waits lets the child's runtime go idle, and the next system call
	// wakes the runtime's monitor thread, which then polls every 20 µs
	// until the handler waits again. With 500 µs a pool serving such
	// handlers used 40% less CPU per request; a plain echo lost a few
	// percent of its requests (see "Performance" in the README). The
	// cost: every timer in the children, and in programs they start, may
	// fire up to this much late (time.Sleep, timeouts, deadlines), where a
	// child's own waits already let them run up to 4 ms late. At most a
	// second. Elsewhere it is ignored.
	ChildTimerSlack time.Duration

	// NoSignals leaves signals to the program: Run installs no signal
	// handler, in the master or in the children, and the program stops
	// the pool with Shutdown, Close or Run's context. (By default SIGINT
	// and SIGTERM stop the pool gracefully, a second one at once, SIGHUP
	// goes to ManagerHooks.Signal, and a child finishes its request on its
	// own SIGINT or SIGTERM.) A child still stops with its master.
	NoSignals bool

	// Logger receives the master's and the children's logs. Nil means
	// slog.Default().
	Logger *slog.Logger

	// NewChild returns the Child that serves requests in a child process.
	// It is called once in each child, never in the master.
	NewChild func() Child

	// Hooks are the master's lifecycle hooks.
	Hooks ManagerHooks

	mu      sync.Mutex
	running *master // while Run runs in the master
	closed  bool    // Shutdown or Close was called
}

// Run runs the prefork server and blocks until it stops.
//
// In the master, Run checks the configuration (an error wrapping
// ErrInvalidConfig says what to change), binds the listener (or takes the
// socket it is given: Listener, or systemd's), starts the
// children and keeps the pool sized. A SIGINT or SIGTERM, or the
// cancellation of ctx, stops it gracefully; Run then returns nil once every
// child has exited and the listener is closed. After Shutdown or Close it
// returns ErrManagerClosed, also when they were called before Run started
// (then at once, having started nothing). If ctx is already done, Run
// returns ctx's error and starts nothing. Otherwise Run returns why it
// could not go on: a hook's error, a listen error, or ErrChildStart.
//
// In a child, Run serves requests and returns when the child is done: nil
// after a normal end, the error of Child.Initialize if it failed,
// ErrMasterGone if the master died. The program should then exit.
func (m *Manager) Run(ctx context.Context) error {
	if inherited == nil {
		// A master started by an upgrade that returns before its pool is
		// ready says so at once to the master it was to succeed.
		defer handedOver.release()
	}
	cfg, err := m.config(inherited == nil)
	if err != nil {
		return err
	}
	if inherited != nil {
		return runChild(ctx, cfg, inherited)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ms := newMaster(ctx, cfg)
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return ErrManagerClosed
	case m.running != nil:
		m.mu.Unlock()
		return errors.New("prefork: Run called while the Manager is running")
	}
	m.running = ms
	m.mu.Unlock()
	defer close(ms.done)
	err = ms.run()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running = nil
	if err == nil && m.closed {
		return ErrManagerClosed
	}
	return err
}

// master returns the master that Run runs in this process, or nil; with
// close, it also marks the Manager closed, for a Run yet to come.
func (m *Manager) master(close bool) *master {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = m.closed || close
	return m.running
}

// Shutdown stops the pool gracefully, as SIGTERM does, and waits until Run
// has returned. If ctx is done first, it kills the children that are left,
// as Close does, waits for Run to return, and returns ctx's error. Run then
// returns ErrManagerClosed. A Shutdown before Run has started returns nil
// at once and makes Run return ErrManagerClosed without starting anything.
// Do not call it from a hook, which Run waits for: return an action from
// ManagerHooks.Signal, or call Close, instead.
func (m *Manager) Shutdown(ctx context.Context) error {
	ms := m.master(true)
	if ms == nil {
		return nil
	}
	ms.ask(ActionStop)
	select {
	case <-ms.done:
		return nil
	case <-ctx.Done():
		ms.ask(ActionStopNow)
		<-ms.done
		return ctx.Err()
	}
}

// Close kills every child at once and makes Run return ErrManagerClosed
// (at once, if Run has not started yet). It does not wait.
func (m *Manager) Close() error {
	if ms := m.master(true); ms != nil {
		ms.ask(ActionStopNow)
	}
	return nil
}

// RestartChildren replaces every child with a fresh one, a few at a time,
// without failing a request: each old child is retired when it is idle and
// replaced as the pool needs. Use it after a change that children read
// when they start, for example from the SIGHUP handler (or return the
// ActionRestart from ManagerHooks.Signal). It returns at once, and
// does nothing when Run is not running in this process's master.
func (m *Manager) RestartChildren() {
	if ms := m.master(false); ms != nil {
		ms.ask(ActionRestart)
	}
}
