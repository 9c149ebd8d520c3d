package prefork_test

// The test binary is its own master and children, as in os/exec's tests:
// a test starts the binary again with PFTEST_HELPER set, TestMain sees it
// and runs helperMain instead of the tests, helperMain calls Manager.Run,
// and the children that Run starts (the same binary, with the same
// environment) reach the same Run and serve. Hooks append one JSON line
// per call to an event file that the test reads.

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	envHelper = "PFTEST_HELPER"
	envConfig = "PFTEST_CONFIG"
	envDial   = "PFTEST_DIAL" // "network address": the binary is a client (dialMain)
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(helperMain())
	}
	if target := os.Getenv(envDial); target != "" {
		os.Exit(dialMain(target))
	}
	// Under -race the helpers are instrumented too, and such a program
	// sleeps a second as it exits, for late races to be reported: the
	// tests wait for hundreds of exits. A tenth of a second still catches
	// what races at exit.
	if gorace := os.Getenv("GORACE"); !strings.Contains(gorace, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(gorace+" atexit_sleep_ms=100"))
	}
	os.Exit(m.Run())
}

// helperConfig is the pool a test asks the helper to run.
type helperConfig struct {
	Network, Addr                             string // default tcp, 127.0.0.1:0
	ReusePort                                 bool
	Min, Max, MinSpare, MaxSpare, MaxRequests int
	ShutdownTimeout                           time.Duration
	Events                                    string        // event file
	DenySecond                                bool          // AllowDeny refuses a child's second request
	FailInit                                  bool          // Initialize fails
	FailInitAfter                             time.Duration // and takes this long to
	Quiet                                     bool          // log warnings and errors only
	DenyEvenPorts                             bool          // AllowDeny refuses clients whose port is even
	FailPreBind                               bool          // the child's PreBind fails
	RestartOnHUP                              bool          // SIGHUP restarts the children
	RequestTimeout                            time.Duration
	Jitter                                    int
	NotifyContext                             bool   // Run's ctx ends on SIGINT/SIGTERM, as with signal.NotifyContext
	FailInitFlag                              string // Initialize fails once when this file exists, and removes it
	FailInitWhile                             string // Initialize fails while this file exists (a dependency that is down)
	HangInitFlag                              string // Initialize hangs once when this file exists, and removes it
	StartTimeout                              time.Duration
	ChildMaxProcs                             int
	ChildTimerSlack                           time.Duration
	ReportTimerSlack                          bool // Initialize records the child's timer slack, as a TimerSlack event
	FewFDs                                    bool // Initialize leaves the child a few descriptors: "leak" runs out of them
	HangShutdown                              bool // the child's Shutdown hook never returns
	NotifyBeforeRun                           bool // the program calls signal.Notify (SIGUSR1) before Run
	OwnSignals                                bool // NoSignals, and the program takes SIGTERM itself: Shutdown in the master, nothing in a child
	InProcessFirst                            bool // the master runs the Child in process for one request before Run (an InProcess event)
	ConnGoroutine                             int  // ProcessRequest serves the connection from a goroutine of its own; 2: and declares it (ConnGoroutines)
	SlowRequest                               time.Duration
	MaxLifetime                               time.Duration
	MaxChildMemory                            int64
	NoAddr                                    bool   // Addr is left empty: the master is given its socket
	ListenerName                              string // Manager.ListenerName
	User, Group                               string
	SocketMode                                os.FileMode
	SocketUser, SocketGroup                   string
	Sockets                                   []prefork.Socket // Manager.Sockets (no Listener)
	FailPostBindWhile                         string           // the master's PostBind fails while this file exists
	HangInitWhile                             string           // Initialize waits while this file exists
	KillInit                                  bool             // Initialize ends its process with SIGKILL
	UpgradeOnHUP                              bool             // SIGHUP calls Manager.Upgrade, which records an Upgraded event with its error
}

func helperMain() int {
	var cfg helperConfig
	if err := json.Unmarshal([]byte(os.Getenv(envConfig)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper: bad config:", err)
		return 3
	}
	ctx := context.Background()
	if cfg.NotifyContext {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
	}
	m := newHelperManager(cfg)
	if cfg.NotifyBeforeRun {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGUSR1)
	}
	if cfg.OwnSignals {
		m.NoSignals = true
		terms := make(chan os.Signal, 1)
		signal.Notify(terms, syscall.SIGTERM)
		go func() {
			for range terms {
				rec := recorder{path: cfg.Events, role: "master"}
				if prefork.IsChild() {
					rec.role = "child"
				}
				rec.add("ProgramSIGTERM", "")
				m.Shutdown(context.Background()) // nothing in a child
			}
		}()
	}
	if cfg.InProcessFirst && !prefork.IsChild() {
		pid, err := inProcessFirst(m)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper: RunInProcess:", err)
			return 1
		}
		recorder{path: cfg.Events, role: "master"}.add("InProcess", pid)
	}
	fds, goroutines := countFDs(), runtime.NumGoroutine()
	err := m.Run(ctx)
	if errors.Is(err, prefork.ErrManagerClosed) {
		err = nil // the program's own Shutdown
	}
	if prefork.IsChild() { // what Run left behind in this child
		// A goroutine that has signalled a WaitGroup may not have exited
		// yet: give those a moment. os/signal's watcher stays for good.
		for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > goroutines+1 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		rec := recorder{path: cfg.Events, role: "child"}
		rec.add("AfterRun", fmt.Sprintf("fds %d->%d goroutines %d->%d", fds, countFDs(), goroutines, runtime.NumGoroutine()))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: Run:", err)
		return 1
	}
	return 0
}

func countFDs() int {
	fds, _ := os.ReadDir("/proc/self/fd")
	return len(fds)
}

func newHelperManager(cfg helperConfig) *prefork.Manager {
	rec := recorder{path: cfg.Events, role: "master"}
	if prefork.IsChild() {
		rec.role = "child"
		if cfg.FewFDs {
			rec.path = ""
		}
	}
	hook := func(name string) func(context.Context) error {
		return func(context.Context) error { rec.add(name, ""); return nil }
	}
	level := slog.LevelDebug
	if cfg.Quiet {
		level = slog.LevelWarn
	}
	if cfg.Addr == "" && !cfg.NoAddr && len(cfg.Sockets) == 0 {
		cfg.Addr = "127.0.0.1:0"
	}
	m := &prefork.Manager{}
	*m = prefork.Manager{
		Network:           cfg.Network,
		Addr:              cfg.Addr,
		ListenerName:      cfg.ListenerName,
		Sockets:           cfg.Sockets,
		ReusePort:         cfg.ReusePort,
		MinServers:        cfg.Min,
		MaxServers:        cfg.Max,
		MinSpareServers:   cfg.MinSpare,
		MaxSpareServers:   cfg.MaxSpare,
		MaxRequests:       cfg.MaxRequests,
		MaxRequestsJitter: cfg.Jitter,
		MaxLifetime:       cfg.MaxLifetime,
		MaxChildMemory:    cfg.MaxChildMemory,
		RequestTimeout:    cfg.RequestTimeout,
		SlowRequest:       cfg.SlowRequest,
		ChildMaxProcs:     cfg.ChildMaxProcs,
		ChildTimerSlack:   cfg.ChildTimerSlack,
		ShutdownTimeout:   cfg.ShutdownTimeout,
		StartTimeout:      cfg.StartTimeout,
		User:              cfg.User,
		Group:             cfg.Group,
		SocketMode:        cfg.SocketMode,
		SocketUser:        cfg.SocketUser,
		SocketGroup:       cfg.SocketGroup,
		Logger:            slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
		NewChild:          func() prefork.Child { return &testChild{cfg: cfg, rec: rec} },
		Hooks: prefork.ManagerHooks{
			PreBind: hook("PreBind"),
			PostBind: func(_ context.Context, addr net.Addr) error {
				rec.add("PostBind", addr.String())
				if _, err := os.Stat(cfg.FailPostBindWhile); cfg.FailPostBindWhile != "" && err == nil {
					return errors.New("PostBind refused by the test")
				}
				return nil
			},
			PreSignalSetup:   hook("PreSignalSetup"),
			PostSignalSetup:  hook("PostSignalSetup"),
			PreInitChildren:  hook("PreInitChildren"),
			PostInitChildren: hook("PostInitChildren"),
			PreLoop:          hook("PreLoop"),
			PreServerClose:   func(context.Context) { rec.add("PreServerClose", "") },
			ChildStarted:     func(int) { rec.add("ChildStarted", "") },
			ChildExited: func(pid int, reason prefork.ExitReason, _ error) {
				rec.add("ChildExited", fmt.Sprintf("%d %s", pid, reason))
			},
			PoolResized: func(n int) { rec.add("PoolResized", strconv.Itoa(n)) },
			Signal: func(sig os.Signal, stopping bool) prefork.SignalAction {
				rec.add("Signal", sig.String())
				if cfg.RestartOnHUP && sig == syscall.SIGHUP {
					return prefork.ActionRestart
				}
				if cfg.UpgradeOnHUP && sig == syscall.SIGHUP {
					go func() { rec.add("Upgraded", fmt.Sprint(m.Upgrade(context.Background()))) }()
				}
				return prefork.DefaultSignal(sig, stopping)
			},
		},
	}
	return m
}

// recorder appends events to a file shared by the master and its children;
// O_APPEND keeps each single write whole.
type recorder struct{ path, role string }

type event struct {
	PID    int
	Role   string
	Hook   string
	Detail string
}

func (r recorder) add(hook, detail string) {
	if r.path == "" { // a child that must not open files (FewFDs)
		return
	}
	line, _ := json.Marshal(event{PID: os.Getpid(), Role: r.role, Hook: hook, Detail: detail})
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	if _, err := f.Write(append(line, '\n')); err != nil {
		panic(err)
	}
}

// testChild serves a line protocol: "pid" answers the child's pid; "socket"
// the request's SocketName, "nth" its Served; "sleep D"
// sleeps D (or until ctx ends) and answers "slept" or "cancelled";
// "stopping" answers once Request.Stopping is closed; "alloc N" takes N
// MiB more of memory and keeps it; "getenv NAME" answers the child's
// environment variable, or "(unset)"; "setuid" tries to become root and
// answers the error; anything else is echoed. It records every hook.
type testChild struct {
	cfg     helperConfig
	rec     recorder
	leaking bool
	leaked  []*os.File // kept, so that no finalizer closes them
	held    [][]byte   // what "alloc" took
}

func (c *testChild) Initialize(context.Context) error {
	c.rec.add("Initialize", strconv.Itoa(runtime.GOMAXPROCS(0))+" "+os.Getenv("GOMAXPROCS"))
	if c.cfg.ReportTimerSlack { // the main thread's, inherited as every thread's
		slack, _ := os.ReadFile("/proc/self/timerslack_ns")
		c.rec.add("TimerSlack", strings.TrimSpace(string(slack)))
	}
	if c.cfg.FewFDs {
		if err := limitFDs(countFDs() + 4); err != nil {
			return err
		}
	}
	if c.cfg.KillInit {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	if c.cfg.FailInit {
		time.Sleep(c.cfg.FailInitAfter)
		return errors.New("initialization refused by the test")
	}
	if _, err := os.Stat(c.cfg.FailInitWhile); c.cfg.FailInitWhile != "" && err == nil {
		return errors.New("the dependency is down")
	}
	for deadline := time.Now().Add(time.Minute); c.cfg.HangInitWhile != "" && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(c.cfg.HangInitWhile); err != nil {
			break
		}
	}
	if c.cfg.HangInitFlag != "" && os.Remove(c.cfg.HangInitFlag) == nil {
		time.Sleep(time.Hour)
	}
	if c.cfg.FailInitFlag != "" && os.Remove(c.cfg.FailInitFlag) == nil {
		return errors.New("initialization refused once by the test")
	}
	return nil
}

func (c *testChild) PreBind(context.Context) error {
	c.rec.add("PreBind", "")
	if c.cfg.FailPreBind {
		return errors.New("PreBind refused by the test")
	}
	return nil
}

func (c *testChild) PostBind(_ context.Context, addr net.Addr) error {
	c.rec.add("PostBind", addr.String())
	return nil
}

func (c *testChild) PostAccept(_ context.Context, r *prefork.Request) error {
	c.rec.add("PostAccept", strconv.Itoa(r.Served))
	return nil
}

func (c *testChild) AllowDeny(_ context.Context, r *prefork.Request) bool {
	c.rec.add("AllowDeny", r.Network)
	if c.cfg.DenyEvenPorts {
		if udp, ok := r.RemoteAddr.(*net.UDPAddr); ok && udp.Port%2 == 0 {
			return false
		}
	}
	return !(c.cfg.DenySecond && r.Served == 1)
}

func (c *testChild) RequestDenied(_ context.Context, r *prefork.Request) {
	c.rec.add("RequestDenied", "")
	r.Reply([]byte("denied\n"))
}

// answerDatagram serves the datagram version of the protocol: "pid", or
// "size" followed by any bytes, answered with their length and checksum;
// anything else is echoed.
func answerDatagram(r *prefork.Request) error {
	cmd, _, _ := strings.Cut(string(r.Data), " ")
	switch cmd {
	case "pid":
		return r.Reply([]byte(strconv.Itoa(os.Getpid())))
	case "socket":
		return r.Reply([]byte(r.SocketName))
	case "size":
		return r.Reply(fmt.Appendf(nil, "%d %08x", len(r.Data), crc32.ChecksumIEEE(r.Data)))
	}
	return r.Reply(r.Data)
}

func (c *testChild) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	c.rec.add("ProcessRequest", fmt.Sprint(r.RemoteAddr))
	if r.Conn == nil {
		return answerDatagram(r)
	}
	if c.cfg.ConnGoroutine > 0 {
		if c.cfg.ConnGoroutine == 2 {
			r.ConnGoroutines(1)
		}
		done := make(chan error)
		go func() { done <- c.serveConn(ctx, r) }()
		return <-done
	}
	return c.serveConn(ctx, r)
}

// serveConn runs the commands that come on r's connection.
func (c *testChild) serveConn(ctx context.Context, r *prefork.Request) error {
	in := bufio.NewScanner(r.Conn)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		var reply string
		switch cmd {
		case "pid":
			reply = strconv.Itoa(os.Getpid())
		case "socket":
			reply = r.SocketName
		case "nth": // how many requests the child served before this one
			reply = strconv.Itoa(r.Served)
		case "sleep":
			d, err := time.ParseDuration(arg)
			if err != nil {
				return err
			}
			select {
			case <-time.After(d):
				reply = "slept"
			case <-ctx.Done():
				reply = "cancelled"
			}
		case "sleepcheck": // sleep, then tell whether a stop had begun
			d, err := time.ParseDuration(arg)
			if err != nil {
				return err
			}
			time.Sleep(d)
			select {
			case <-r.Stopping():
				reply = "stopping"
			default:
				reply = "not stopping"
			}
		case "stopping":
			<-r.Stopping()
			reply = "stopping"
		case "getenv":
			value, set := os.LookupEnv(arg)
			reply = cmp.Or(value, "(empty)")
			if !set {
				reply = "(unset)"
			}
		case "hang": // a handler that ignores ctx
			time.Sleep(time.Hour)
		case "duplex": // another goroutine writes while this one reads on
			n, err := strconv.Atoi(arg)
			if err != nil {
				return err
			}
			go func() {
				for i := range n {
					fmt.Fprintf(r.Conn, "tick %d\n", i)
					time.Sleep(time.Millisecond)
				}
			}()
			continue
		case "alloc":
			n, err := strconv.Atoi(arg)
			if err != nil {
				return err
			}
			b := make([]byte, n<<20)
			for i := 0; i < len(b); i += 4096 { // a page counts once it is touched
				b[i] = 1
			}
			c.held = append(c.held, b)
			reply = "allocated"
		case "leak": // from now on, the child leaks every descriptor it can (see PostProcessRequest)
			c.leaking = true
			reply = "leaked"
		case "panic":
			panic("the test asked for it")
		case "setuid": // a child that runs as another user tries to become root again
			reply = fmt.Sprint(syscall.Setuid(0))
		case "corrupt": // garbage on the status socket, as a broken child might write
			syscall.Write(3, []byte("not a status record"))
			reply = "corrupted"
		default:
			reply = in.Text()
		}
		if _, err := fmt.Fprintln(r.Conn, reply); err != nil {
			return err
		}
		select {
		case <-r.Stopping(): // a clean point to end a long-lived connection
			return nil
		default:
		}
	}
	return in.Err()
}

func (c *testChild) PostProcessRequest(_ context.Context, _ *prefork.Request, err error) {
	// After the request's connection is closed: the descriptor table is
	// full when the child next accepts.
	for c.leaking {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		c.leaked = append(c.leaked, f)
	}
	c.rec.add("PostProcessRequest", fmt.Sprint(err))
}

func (c *testChild) Shutdown(_ context.Context, err error) {
	if c.cfg.HangShutdown {
		c.rec.add("Shutdown", "hangs")
		time.Sleep(time.Hour)
	}
	var p *prefork.PanicError
	if errors.As(err, &p) {
		c.rec.add("Shutdown", "PanicError in "+p.Hook)
		return
	}
	c.rec.add("Shutdown", fmt.Sprint(err))
}

// dialMain connects to target, "network address", sends a line and prints
// the answer; if it cannot connect, it prints "denied" when it was refused
// permission, or the error, and fails.
func dialMain(target string) int {
	network, address, _ := strings.Cut(target, " ")
	conn, err := net.DialTimeout(network, address, waitLimit)
	if errors.Is(err, os.ErrPermission) {
		fmt.Println("denied")
		return 1
	}
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLimit))
	fmt.Fprintln(conn, "hello")
	answer, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Print(answer)
	return 0
}

// pool is a master started by a test, in a process group of its own.
type pool struct {
	t       *testing.T
	cmd     *exec.Cmd
	events  string
	log     string
	network string // to dial
	addr    string
	done    chan struct{} // closed when the master has exited
	err     error         // the master's exit, once done is closed
}

const waitLimit = 15 * time.Second // generous: the race detector on 2 busy cores is slow

func startPool(t *testing.T, cfg helperConfig) *pool {
	t.Helper()
	p := startPoolNoWait(t, cfg)
	p.addr = p.waitEvent("", "PostBind").Detail // the master's, or a child's in reuse-port mode
	return p
}

// startPoolNoWait starts a master and returns at once.
func startPoolNoWait(t *testing.T, cfg helperConfig) *pool {
	t.Helper()
	return startPoolWith(t, cfg, func(env []string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), env...)
		return cmd
	})
}

// startPoolWith starts a master with the command that command makes,
// which runs the test binary with env added to its environment, and
// returns at once.
func startPoolWith(t *testing.T, cfg helperConfig, command func(env []string) *exec.Cmd) *pool {
	t.Helper()
	dir := t.TempDir()
	if cfg.Events == "" { // children that do not run as root need one they can write
		cfg.Events = filepath.Join(dir, "events")
	}
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	p := &pool{t: t, events: cfg.Events, network: cfg.Network, log: filepath.Join(dir, "log"), done: make(chan struct{})}
	if p.network == "" {
		p.network = "tcp"
	}
	logFile, err := os.Create(p.log)
	require.NoError(t, err)
	defer logFile.Close()

	p.cmd = command([]string{envHelper + "=1", envConfig + "=" + string(js)})
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		if strings.Contains(p.logText(), "DATA RACE") {
			t.Error("the race detector found a data race in the master or a child")
		}
		if t.Failed() {
			out, _ := os.ReadFile(p.log)
			t.Logf("master and children's log:\n%s", out)
		}
	})
	return p
}

// startReady starts a pool and waits until its first children are ready.
func startReady(t *testing.T, cfg helperConfig) *pool {
	p := startPool(t, cfg)
	p.waitEvent("master", "PostInitChildren")
	return p
}

func (p *pool) logText() string {
	out, err := os.ReadFile(p.log)
	require.NoError(p.t, err)
	return string(out)
}

func (p *pool) readEvents() []event {
	data, err := os.ReadFile(p.events)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(p.t, err)
	var evs []event
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		var ev event
		require.NoError(p.t, json.Unmarshal([]byte(line), &ev), "event line %q", line)
		evs = append(evs, ev)
	}
	return evs
}

func (p *pool) waitEvent(role, hook string) event {
	p.t.Helper()
	var found event
	p.waitFor(role+" "+hook+" event", func() bool {
		for _, ev := range p.readEvents() {
			if (role == "" || ev.Role == role) && ev.Hook == hook {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// waitFor polls cond until it holds, failing the test after waitLimit or
// if the master exits first.
func (p *pool) waitFor(what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		select {
		case <-p.done:
			if cond() {
				return
			}
			p.t.Fatalf("master exited (%v) while waiting for %s", p.err, what)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// masterSawReady reports whether the master has logged every one of pids
// as ready: a child's own hooks run before the master counts it.
func (p *pool) masterSawReady(pids ...int) bool {
	log := p.logText()
	for _, pid := range pids {
		if !strings.Contains(log, `"msg":"prefork: child ready","pid":`+strconv.Itoa(pid)+"}") {
			return false
		}
	}
	return true
}

// wait waits for the master to exit and returns its exit error.
func (p *pool) wait() error {
	p.t.Helper()
	return p.waitWithin(waitLimit)
}

// waitWithin is wait, for a master that takes longer than waitLimit.
func (p *pool) waitWithin(limit time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(limit):
		p.t.Fatal("master did not exit")
		return nil
	}
}

func (p *pool) signal(sig syscall.Signal) {
	require.NoError(p.t, p.cmd.Process.Signal(sig))
}

// children lists the live (not zombie) children of the master.
func (p *pool) children() []int {
	return processes(func(ppid, _ int) bool { return ppid == p.cmd.Process.Pid })
}

// group lists the live processes of the pool's process group.
func (p *pool) group() []int {
	return processes(func(_, pgrp int) bool { return pgrp == p.cmd.Process.Pid })
}

func processes(match func(ppid, pgrp int) bool) []int {
	dirs, _ := os.ReadDir("/proc")
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 3 || fields[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		pgrp, _ := strconv.Atoi(fields[2])
		if match(ppid, pgrp) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// client is one connection to the pool.
type client struct {
	t    *testing.T
	conn net.Conn
	in   *bufio.Reader
}

func (p *pool) dial() *client {
	p.t.Helper()
	return dialClient(p.t, p.network, p.addr)
}

func dialClient(t *testing.T, network, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout(network, addr, waitLimit)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(2 * waitLimit))
	return &client{t: t, conn: conn, in: bufio.NewReader(conn)}
}

func (c *client) send(line string) {
	c.t.Helper()
	_, err := fmt.Fprintln(c.conn, line)
	require.NoError(c.t, err)
}

// sendLast sends a last line and closes the connection's writing half: the
// child's handler ends after its reply, instead of waiting for another
// line, as it would for ShutdownTimeout if its stop came only after the
// reply.
func (c *client) sendLast(line string) {
	c.t.Helper()
	c.send(line)
	require.NoError(c.t, c.conn.(interface{ CloseWrite() error }).CloseWrite())
}

func (c *client) recv() (string, error) {
	line, err := c.in.ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func (c *client) ask(line string) string {
	c.t.Helper()
	c.send(line)
	reply, err := c.recv()
	require.NoError(c.t, err, "reply to %q", line)
	return reply
}

// queueBehindBusyChild makes the pool's only child busy with a request
// that it answers once a stop has begun ("stopping"), then queues n
// connections behind it, each with a line sent, "queued <i>".
func (p *pool) queueBehindBusyChild(n int) (busy *client, queued []*client) {
	p.t.Helper()
	busy = p.dial()
	busy.send("stopping")
	p.waitEvent("child", "ProcessRequest")
	for i := range n {
		c := p.dial()
		c.send(fmt.Sprint("queued ", i))
		queued = append(queued, c)
	}
	return busy, queued
}

// requireQueuedServed checks that the connections that
// queueBehindBusyChild queued are served.
func requireQueuedServed(t *testing.T, queued []*client) {
	t.Helper()
	for i, c := range queued {
		reply, err := c.recv()
		require.NoError(t, err, "queued connection %d is served", i)
		assert.Equal(t, fmt.Sprint("queued ", i), reply)
	}
}

// askNew asks line on a connection of its own, which must be answered
// within the time given: a connection left waiting fails the test.
func (p *pool) askNew(line string, within time.Duration) string {
	p.t.Helper()
	c := p.dial()
	defer c.conn.Close()
	c.conn.SetDeadline(time.Now().Add(within))
	return c.ask(line)
}

// askPID asks a new connection which child serves it.
func (p *pool) askPID() int {
	p.t.Helper()
	c := p.dial()
	defer c.conn.Close()
	pid, err := strconv.Atoi(c.ask("pid"))
	require.NoError(p.t, err)
	return pid
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}

// childExit is what a child logs as it exits, in Debug mode.
type childExit struct {
	Served   int
	Spurious int `json:"spurious_wakeups"`
	Held     int `json:"held_waits"`
}

// childExits reads the exit records of the pool's children from its log,
// once the pool has stopped.
func (p *pool) childExits(t *testing.T) []childExit {
	t.Helper()
	f, err := os.Open(p.log)
	require.NoError(t, err)
	defer f.Close()
	var exits []childExit
	for lines := bufio.NewScanner(f); lines.Scan(); {
		var rec struct {
			Msg string
			childExit
		}
		if json.Unmarshal(lines.Bytes(), &rec) == nil && rec.Msg == "prefork: child exiting" {
			exits = append(exits, rec.childExit)
		}
	}
	return exits
}
