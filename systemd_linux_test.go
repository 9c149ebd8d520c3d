package prefork_test

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/internal/tooltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// socketActivate makes startPoolWith run the helper master under
// systemd-socket-activate, which listens as args say (-l ADDRESS,
// --fdname) and starts the master, with LISTEN_FDS set, at the first
// connection. It gives the program a fresh environment (PATH, HOME, TERM
// and what -E sets). prefix, if any, runs first and execs the rest.
func socketActivate(t *testing.T, prefix []string, args ...string) func(env []string) *exec.Cmd {
	t.Helper()
	program := tooltest.Program(t, "systemd-socket-activate", "systemd")
	return func(env []string) *exec.Cmd {
		argv := append(slices.Clone(prefix), program)
		argv = append(argv, args...)
		for _, kv := range append(env, "GORACE="+os.Getenv("GORACE")) {
			argv = append(argv, "-E", kv)
		}
		argv = append(argv, os.Args[0], "-test.run=^$")
		return exec.Command(argv[0], argv[1:]...)
	}
}

// dialWhenListening dials the pool's address once something listens on
// it: systemd-socket-activate binds after it has started.
func (p *pool) dialWhenListening() *client {
	p.t.Helper()
	var conn net.Conn
	p.waitFor("systemd-socket-activate to listen", func() bool {
		var err error
		conn, err = net.Dial(p.network, p.addr)
		return err == nil
	})
	p.t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(2 * waitLimit))
	return &client{t: p.t, conn: conn, in: bufio.NewReader(conn)}
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// Under systemd-socket-activate the master serves the socket it was passed,
// with neither Network nor Addr set: it learns both from the socket. The
// children do not see the variables, and the pool leaves the socket's file
// when it stops: it is systemd's.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ network, learned string }{{"unix", "unix"}, {"tcp", "tcp4"}} {
		t.Run(c.network, func(t *testing.T) {
			t.Parallel()
			addr := filepath.Join(t.TempDir(), "s")
			if c.network == "tcp" {
				addr = freePort(t)
			}
			cfg := helperConfig{NoAddr: true, Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2}
			p := startPoolWith(t, cfg, socketActivate(t, nil, "-l", addr))
			p.network, p.addr = c.network, addr
			first := p.dialWhenListening() // queued until the master's children take it
			pid := atoi(t, first.ask("pid"))
			assert.NotEqual(t, p.cmd.Process.Pid, pid, "a child serves")
			for _, env := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
				assert.Equal(t, "(unset)", first.ask("getenv "+env), "a child sees no %s", env)
			}
			first.conn.Close()
			assert.Equal(t, addr, p.waitEvent("master", "PostBind").Detail, "PostBind gets the socket's address")
			assert.Equal(t, c.learned, p.waitEvent("child", "AllowDeny").Detail, "the network is learned from the socket")
			assert.Equal(t, "hello", p.askNew("hello", waitLimit))
			for _, ev := range p.readEvents() {
				assert.False(t, ev.Role == "master" && ev.Hook == "PreBind", "PreBind is not called: nothing is bound")
			}

			p.signal(syscall.SIGTERM)
			require.NoError(t, p.wait())
			if c.network == "unix" {
				fi, err := os.Lstat(addr)
				require.NoError(t, err, "the socket's file stays")
				assert.NotZero(t, fi.Mode()&os.ModeSocket, "and is a socket")
			}
		})
	}
}

// Of several sockets, the master serves the ones that ListenerName names;
// without a name, all of them; with Sockets, each of those that a Socket
// names, in place of binding its Addr. Requests say which socket they
// came from.
func TestSocketActivationByName(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		cfg    helperConfig
		fdname string // --fdname, for sockets a and b
		want   map[string]string
	}{
		{"ListenerName", helperConfig{ListenerName: "b"}, "a:b", map[string]string{"b": "b"}},
		{"all", helperConfig{}, "", map[string]string{"a": "unknown", "b": "unknown"}},
		{"Sockets", helperConfig{Sockets: []prefork.Socket{{Name: "web"}, {Name: "admin"}}}, "admin:web", map[string]string{"a": "admin", "b": "web"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			args := []string{"-l", filepath.Join(dir, "a"), "-l", filepath.Join(dir, "b")}
			if c.fdname != "" {
				args = append(args, "--fdname="+c.fdname)
			}
			cfg := c.cfg
			cfg.NoAddr, cfg.Min, cfg.Max, cfg.MinSpare, cfg.MaxSpare = true, 1, 2, 1, 1
			p := startPoolWith(t, cfg, socketActivate(t, nil, args...))
			p.network = "unix"
			var first *client
			for socket, name := range c.want {
				p.addr = filepath.Join(dir, socket)
				if first == nil {
					first = p.dialWhenListening() // starts the master
					assert.Equal(t, name, first.ask("socket"), "socket %s", socket)
					continue
				}
				assert.Equal(t, name, p.askNew("socket", waitLimit), "socket %s", socket)
			}
			posts := 0
			for _, ev := range p.readEvents() {
				if ev.Role == "master" && ev.Hook == "PostBind" {
					posts++
				}
			}
			assert.Equal(t, len(c.want), posts, "PostBind for each socket served")
			first.conn.Close()
			p.signal(syscall.SIGTERM)
			require.NoError(t, p.wait())
		})
	}
}

// A socket the master did not create keeps its intake when the pool stops:
// the connections that wait in its queue, and those that come during the
// stop, are neither served nor reset, but left to whoever holds the socket
// (systemd, here the test: it holds the socket and passes it on through
// systemd-socket-activate, as systemd does). p is a pool of one child;
// stop begins its stop, wait waits until the master is done.
func checkQueueLeft(t *testing.T, p *pool, held net.Listener, stop, wait func()) {
	t.Helper()
	busy := p.dial()
	busy.send("stopping") // answered once the stop has begun
	p.waitEvent("child", "ProcessRequest")
	queued := p.dial() // the only child is busy: it waits in the queue
	queued.send("queued")
	stop()
	reply, err := busy.recv()
	require.NoError(t, err)
	require.Equal(t, "stopping", reply)
	late := p.dial() // the socket still takes connections
	late.send("late")
	wait()

	deadline := time.Now().Add(waitLimit)
	for _, want := range []string{"queued", "late"} {
		held.(interface{ SetDeadline(time.Time) error }).SetDeadline(deadline)
		conn, err := held.Accept()
		require.NoError(t, err, "the %s connection waits in the queue", want)
		defer conn.Close()
		conn.SetDeadline(deadline)
		line, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, want+"\n", line, "with what its client sent, unanswered")
	}
}

func TestSocketActivationLeavesTheQueue(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	ln, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer ln.Close()
	passed, err := ln.(*net.UnixListener).File()
	require.NoError(t, err)
	defer passed.Close()
	// The socket goes to the shell as descriptor 3, and LISTEN_PID names
	// systemd-socket-activate, which the shell becomes: it passes the
	// socket on to the master, as systemd passes the ones it holds.
	command := socketActivate(t, []string{"/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`})
	cfg := helperConfig{NoAddr: true, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1}
	p := startPoolWith(t, cfg, func(env []string) *exec.Cmd {
		cmd := command(env)
		cmd.ExtraFiles = []*os.File{passed}
		return cmd
	})
	p.network, p.addr = "unix", path
	held, err := net.FileListener(passed) // non-blocking, whatever happened
	require.NoError(t, err)
	defer held.Close()
	checkQueueLeft(t, p, held, func() { p.signal(syscall.SIGTERM) }, func() { require.NoError(t, p.wait()) })
	_, err = os.Lstat(path)
	assert.NoError(t, err, "the socket's file stays")
}

// Manager.Listener: the program's own socket, served as systemd's is, and
// left to the program, open, with its file and its queue.
func TestListenerStaysTheProgramsOwn(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			address := "127.0.0.1:0"
			if network == "unix" {
				address = filepath.Join(t.TempDir(), "s")
			}
			ln, err := net.Listen(network, address)
			require.NoError(t, err)
			defer ln.Close()
			cfg := helperConfig{NoAddr: true, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1}
			m, p, wait := runMasterHere(t, context.Background(), cfg, func(m *prefork.Manager) { m.Listener = ln.(syscall.Conn) })
			p.network = network
			assert.Equal(t, ln.Addr().String(), p.addr, "PostBind gets the socket's address")
			stopped := make(chan error, 1)
			checkQueueLeft(t, p, ln,
				func() { go func() { stopped <- m.Shutdown(context.Background()) }() },
				func() { assert.ErrorIs(t, wait(), prefork.ErrManagerClosed) })
			require.NoError(t, <-stopped)
			if network == "unix" {
				_, err := os.Lstat(address)
				assert.NoError(t, err, "the socket's file stays")
			}
		})
	}
}

// notifications reads what the master tells a service manager on a Unix
// datagram socket, as systemd does with NOTIFY_SOCKET.
type notifications struct {
	t    *testing.T
	msgs chan string
	seen []string // every message read, in order
}

func listenNotifications(t *testing.T) (*notifications, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	n := &notifications{t: t, msgs: make(chan string, 4096)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n, path
}

// next returns the next message with the assignment want (such as
// "READY=1"), failing the test if none comes within waitLimit.
func (n *notifications) next(want string) string {
	n.t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case msg := <-n.msgs:
			n.seen = append(n.seen, msg)
			if slices.Contains(strings.Split(msg, "\n"), want) {
				return msg
			}
		case <-timeout:
			n.t.Fatalf("no %s; seen: %q", want, n.seen)
		}
	}
}

// drain reads the messages that have come so far.
func (n *notifications) drain() {
	for {
		select {
		case msg := <-n.msgs:
			n.seen = append(n.seen, msg)
		default:
			return
		}
	}
}

// statuses lists the STATUS= values of the messages seen.
func (n *notifications) statuses() []string {
	var out []string
	for _, msg := range n.seen {
		for _, line := range strings.Split(msg, "\n") {
			if status, ok := strings.CutPrefix(line, "STATUS="); ok {
				out = append(out, status)
			}
		}
	}
	return out
}

var readyStatus = regexp.MustCompile(`^serving on tcp 127\.0\.0\.1:\d+: (\d+) children, (\d+) ready$`)

// READY=1 after a restart waits until the old children have said that they
// take no more requests: until then one that has not read the word (here,
// stopped) could still be woken for a connection.
func TestReadyAfterRestartWaitsForOldChildren(t *testing.T) {
	n, socket := listenNotifications(t)
	t.Setenv("NOTIFY_SOCKET", socket)
	// MinSpareServers as many as the children: the restart retires them
	// all in one step, instead of waiting for each to leave.
	m, _, wait := runMasterHere(t, context.Background(), helperConfig{Min: 1, Max: 12, MinSpare: 4, MaxSpare: 4})
	n.next("READY=1")
	s := eventually(t, m, "the pool at rest", func(s prefork.Stats) bool {
		return len(s.Children) == 4 && !slices.ContainsFunc(s.Children, func(c prefork.ChildStats) bool {
			return c.State != prefork.ChildIdle && c.State != prefork.ChildParked
		})
	})

	old := statsPIDs(s)
	for _, pid := range old {
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	}
	m.RestartChildren()
	n.next("RELOADING=1")
	eventually(t, m, "the old children told to retire, and new ones ready", func(s prefork.Stats) bool {
		ready := 0
		for _, c := range s.Children {
			switch {
			case slices.Contains(old, c.PID) && c.State != prefork.ChildRetiring:
				return false
			case !slices.Contains(old, c.PID) && (c.State == prefork.ChildIdle || c.State == prefork.ChildParked):
				ready++
			}
		}
		return ready >= 1
	})
	// Without the old children's word, the master would send READY=1 at
	// once, at the look that published that snapshot.
	for quiet := time.After(500 * time.Millisecond); ; {
		select {
		case msg := <-n.msgs:
			n.seen = append(n.seen, msg)
			require.NotContains(t, strings.Split(msg, "\n"), "READY=1", "READY=1 while old children could still serve")
			continue
		case <-quiet:
		}
		break
	}

	for _, pid := range old {
		require.NoError(t, syscall.Kill(pid, syscall.SIGCONT))
	}
	n.next("READY=1")
	eventually(t, m, "the old children gone", func(s prefork.Stats) bool {
		return !slices.ContainsFunc(statsPIDs(s), func(pid int) bool { return slices.Contains(old, pid) })
	})
	m.Close()
	assert.ErrorIs(t, wait(), prefork.ErrManagerClosed)
}

// The master tells the service manager (sd_notify) that the pool is ready,
// restarting, ready again, and stopping, with its status, and keeps its
// watchdog fed; its children see none of the service manager's variables.
func TestServiceManagerNotifications(t *testing.T) {
	n, socket := listenNotifications(t)
	t.Setenv("NOTIFY_SOCKET", socket)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("LISTEN_FDS", "1") // for another process: LISTEN_PID names it
	t.Setenv("LISTEN_PID", "1")
	m, p, wait := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2})

	ready := n.next("READY=1")
	require.NotEmpty(t, n.statuses(), "STATUS lines come before READY=1 while children start")
	assert.Contains(t, n.statuses()[0], "starting")
	status := n.statuses()[len(n.statuses())-1]
	assert.Contains(t, ready, "STATUS="+status, "READY=1 comes with the status")
	counts := readyStatus.FindStringSubmatch(status)
	require.NotNil(t, counts, status)
	assert.GreaterOrEqual(t, atoi(t, counts[2]), 2, "READY=1 once MinServers children are ready")
	for _, env := range []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"} {
		assert.Equal(t, "(unset)", p.askNew("getenv "+env, waitLimit), "a child sees no %s", env)
	}

	// WATCHDOG_USEC/2 is 100 ms: several within a second.
	start := time.Now()
	for range 3 {
		n.next("WATCHDOG=1")
	}
	assert.Less(t, time.Since(start), time.Second, "three WATCHDOG=1 within a second")

	before := myChildren()
	m.RestartChildren()
	reloading := n.next("RELOADING=1")
	assert.Regexp(t, `(^|\n)MONOTONIC_USEC=\d+(\n|$)`, reloading)
	readyAgain := n.next("READY=1")
	assert.Contains(t, readyAgain, "STATUS=serving on ")
	assert.True(t, slices.ContainsFunc(n.statuses(), func(s string) bool { return strings.HasPrefix(s, "restarting children") }),
		"a STATUS while children restart: %q", n.statuses())
	for range 3 { // the old children take no request any more
		assert.NotContains(t, before, p.askPID())
	}

	go m.Shutdown(context.Background())
	n.next("STOPPING=1")
	assert.ErrorIs(t, wait(), prefork.ErrManagerClosed)
}
