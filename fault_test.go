package prefork_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestPanicInChildIsRecoveredAndChildReplaced(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	victim := c.ask("pid")
	c.send("panic")
	_, err := c.recv()
	assert.Error(t, err, "the connection is closed")

	p.waitFor("the panicking child's Shutdown", func() bool {
		for _, ev := range p.readEvents() {
			if ev.Hook == "Shutdown" && ev.Detail == "PanicError in ProcessRequest" {
				return true
			}
		}
		return false
	})
	p.waitFor("the master's log of the child's death", func() bool {
		log := p.logText()
		return strings.Contains(log, "child died") && strings.Contains(log, "panic in ProcessRequest: the test asked for it")
	})
	assert.Contains(t, p.logText(), "goroutine", "the stack is logged")
	p.waitFor("a replacement", func() bool {
		kids := p.children()
		return len(kids) >= 2 && !slices.Contains(kids, atoi(t, victim))
	})
	after := p.dial()
	assert.Equal(t, "after", after.ask("after"))
	after.conn.Close()
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
}

func TestMalformedStatusRecordGetsChildKilled(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	victim := atoi(t, c.ask("pid"))
	c.send("corrupt")
	p.waitFor("the corrupting child to be killed", func() bool { return !slices.Contains(p.children(), victim) })
	assert.Contains(t, p.logText(), "malformed status record")
	assert.Equal(t, "still serving", p.dial().ask("still serving"))
}

func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2, RequestTimeout: 300 * time.Millisecond})

	polite := p.dial()
	start := time.Now()
	assert.Equal(t, "cancelled", polite.ask("sleep 1h"), "the request's ctx has the deadline")
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)

	stuck := p.dial()
	victim := atoi(t, stuck.ask("pid"))
	stuck.send("hang")
	_, err := stuck.recv()
	assert.Error(t, err, "the stuck request's connection ends")
	p.waitFor("the stuck child to be replaced", func() bool {
		kids := p.children()
		return !slices.Contains(kids, victim) && len(kids) >= 2
	})
	assert.Contains(t, p.logText(), "request timed out")
	assert.Equal(t, "next", p.dial().ask("next"))
}

// Children retire all the time here (after two requests each) while
// clients keep connecting: no connection may fail, because a retiring
// child stops accepting before it exits and the shared socket keeps the
// queue for the others.
func TestRetiringChildrenLoseNoConnection(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2, MaxRequests: 2, Quiet: true})
	failures := hammer(t, p, 4, 40, nil)
	assert.Zero(t, failures)
}

func TestRestartChildrenReplacesEveryChildWithoutFailures(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 3, Max: 6, MinSpare: 1, MaxSpare: 3, RestartOnHUP: true, Quiet: true})
	before := p.children()
	require.Len(t, before, 3)
	failures := hammer(t, p, 3, 60, func() { p.signal(syscall.SIGHUP) })
	assert.Zero(t, failures)
	p.waitFor("every child to be replaced", func() bool {
		kids := p.children()
		for _, pid := range before {
			if slices.Contains(kids, pid) {
				return false
			}
		}
		return len(kids) >= 3
	})
}

// hammer runs clients that each make count short connections, one after
// another, calling during (if not nil) once all clients have started. It
// returns how many connections failed.
func hammer(t *testing.T, p *pool, clients, count int, during func()) int {
	t.Helper()
	var failures atomic.Int64
	var started, wg sync.WaitGroup
	started.Add(clients)
	for range clients {
		wg.Go(func() {
			started.Done()
			for i := range count {
				conn, err := net.DialTimeout("tcp", p.addr, waitLimit)
				if err != nil {
					t.Logf("dial: %v", err)
					failures.Add(1)
					continue
				}
				conn.SetDeadline(time.Now().Add(waitLimit))
				msg := "m" + strconv.Itoa(i)
				fmt.Fprintln(conn, msg)
				reply, err := bufio.NewReader(conn).ReadString('\n')
				if err != nil || reply != msg+"\n" {
					t.Logf("reply %q, %v", reply, err)
					failures.Add(1)
				}
				conn.Close()
			}
		})
	}
	started.Wait()
	if during != nil {
		during()
	}
	wg.Wait()
	return int(failures.Load())
}

func TestMaxRequestsJitter(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2, MaxRequests: 2, Jitter: 3})
	served := map[int]int{}
	for range 40 {
		served[p.askPID()]++
	}
	most := 0
	for pid, n := range served {
		assert.LessOrEqual(t, n, 5, "child %d served %d requests", pid, n)
		most = max(most, n)
	}
	assert.Greater(t, most, 2, "some child got extra requests from the jitter")
	t.Logf("requests per child: %v", served)
}

// Clients that misbehave cost a child one request each, never the child
// itself or the master.
func TestBadClients(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2})
	before := p.children()
	for i := range 20 {
		conn, err := net.DialTimeout("tcp", p.addr, waitLimit)
		require.NoError(t, err)
		switch i % 4 {
		case 0: // connect and close at once
		case 1: // garbage, no newline
			conn.Write([]byte{0, 0xff, 0xfe, '\r', 7, 0})
		case 2: // reset in the middle of a request
			conn.Write([]byte("sleep 50ms\n"))
			conn.(*net.TCPConn).SetLinger(0)
		case 3: // a long line
			conn.Write(bytes.Repeat([]byte("x"), 200_000))
		}
		conn.Close()
	}
	fine := p.dial()
	assert.Equal(t, "fine", fine.ask("fine"))
	fine.conn.Close()
	// The end of the pool is the sync point: a child lost to a bad client
	// would have died before it, and left no normal Shutdown.
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	assert.NotContains(t, p.logText(), "child died")
	assert.Subset(t, shutdownPIDs(p), before, "no child was lost")
}

// A child that crashes on every request must not turn every request into a
// fork: children that die young are restarted with a growing back-off, and
// the pool serves again once they stay up.
func TestChildrenThatDieYoungAreRestartedWithBackOff(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1})
	deadline := time.Now().Add(2 * time.Second)
	crashes := 0
	for time.Now().Before(deadline) && crashes < 1000 {
		conn, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			continue
		}
		conn.SetDeadline(time.Now().Add(time.Second))
		fmt.Fprintln(conn, "panic")
		io.Copy(io.Discard, conn) // until the child is gone, or the deadline
		conn.Close()
		crashes++
	}
	started := strings.Count(p.logText(), "child started")
	t.Logf("%d crashing requests in 2 s started %d children", crashes, started)
	assert.LessOrEqual(t, started, 12, "about one start per back-off step (50 ms, doubling)")
	assert.Contains(t, p.logText(), "died")
	p.waitFor("the pool to serve again", func() bool {
		c, err := net.DialTimeout("tcp", p.addr, time.Second)
		if err != nil {
			return false
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		fmt.Fprintln(c, "ok")
		reply, err := bufio.NewReader(c).ReadString('\n')
		return err == nil && reply == "ok\n"
	})
}

// A handler that leaks descriptors makes its child unable to accept: the
// child leaves after a short grace and is replaced, and the connection that
// woke it is served by another, instead of waiting for good while the
// board calls the child idle.
func TestChildOutOfDescriptorsIsReplaced(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 2, MinSpare: 1, MaxSpare: 2, FewFDs: true, Quiet: true})
	p.waitFor("two children", func() bool { return len(p.children()) == 2 })
	first := p.children()
	leaker := p.dial()
	leaker.conn.SetDeadline(time.Now().Add(5 * time.Second))
	leakerPID := atoi(t, leaker.ask("pid"))
	assert.Equal(t, "leaked", leaker.ask("leak"), "its child leaks every descriptor once the connection ends")
	leaker.conn.Close()

	// Every request is answered (a stranded connection would wait for
	// good) until the leaker has left, and it is replaced.
	for deadline := time.Now().Add(waitLimit); processState(leakerPID) != 0; time.Sleep(10 * time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "the leaker did not leave")
		p.askNew("pid", 5*time.Second)
	}
	p.waitFor("a replacement", func() bool {
		now := p.children()
		return len(now) == 2 && slices.ContainsFunc(now, func(pid int) bool { return !slices.Contains(first, pid) })
	})
}

// A child whose Shutdown hook never returns is killed ShutdownTimeout and a
// grace after it stopped taking requests: its place under MaxServers is
// not taken for good.
func TestChildThatDoesNotExitIsKilled(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 3, MinSpare: 1, MaxSpare: 3, MaxRequests: 1,
		HangShutdown: true, ShutdownTimeout: 200 * time.Millisecond, Quiet: true})
	for range 6 { // twice as many requests as MaxServers, each ending a child
		assert.Equal(t, "ping", p.askNew("ping", waitLimit))
	}
}

// A dependency that is down for a moment at boot does not end the server:
// the first children all fail together, which is one failed attempt, and
// the pool comes up once the dependency does.
func TestDependencyDownAtBoot(t *testing.T) {
	t.Parallel()
	down := filepath.Join(t.TempDir(), "down")
	require.NoError(t, os.WriteFile(down, nil, 0o600))
	p := startPool(t, helperConfig{Min: 5, Max: 8, MinSpare: 1, MaxSpare: 4, FailInitWhile: down, Quiet: true})
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, os.Remove(down))
	p.waitEvent("master", "PostInitChildren")
	assert.Equal(t, "up", p.dial().ask("up"))
}

// A start that hangs after one that failed does not stop the replacement
// of the others: it is killed after StartTimeout, and the pool serves all
// along as children retire.
func TestHangingStartDoesNotStopReplacement(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hang, fail := filepath.Join(dir, "hang"), filepath.Join(dir, "fail")
	require.NoError(t, os.WriteFile(hang, nil, 0o600))
	require.NoError(t, os.WriteFile(fail, nil, 0o600))
	p := startPool(t, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2, MaxRequests: 3,
		HangInitFlag: hang, FailInitFlag: fail, StartTimeout: 2 * time.Second, Quiet: true}) // not a normal start on a loaded machine
	for range 12 {
		assert.Equal(t, "ping", p.askNew("ping", 5*time.Second))
	}
}

// A program started by hand with the child marker set is not taken for a
// child: it fails with an error that names the variable, before it
// touches descriptors 3 and up, which are the program's own.
func TestChildMarkerSetByHand(t *testing.T) {
	t.Parallel()
	for name, masterPID := range map[string]int{
		"another parent":     1,
		"not a master's fds": os.Getpid(),
	} {
		t.Run(name, func(t *testing.T) {
			r, w, err := os.Pipe()
			require.NoError(t, err)
			defer r.Close()
			defer w.Close()
			js, err := json.Marshal(helperConfig{Events: filepath.Join(t.TempDir(), "events"), Quiet: true})
			require.NoError(t, err)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envHelper+"=1", envConfig+"="+string(js),
				"PREFORK_CHILD="+strconv.Itoa(wire.Version), "PREFORK_MASTER_PID="+strconv.Itoa(masterPID),
				`PREFORK_LISTENERS=[{"network":"tcp","addr":"127.0.0.1:1","fd":5}]`, "PREFORK_BOARD=0,1")
			cmd.ExtraFiles = []*os.File{w, w, w} // fds 3, 4 and 5: the program's own pipe
			out, err := cmd.CombinedOutput()
			require.Error(t, err, "%s", out)
			assert.Contains(t, string(out), "PREFORK_CHILD", "the error names the variable")
			raw, err := w.SyscallConn() // w.Fd() would make it blocking
			require.NoError(t, err)
			var flags int
			require.NoError(t, raw.Control(func(fd uintptr) { flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0) }))
			require.NoError(t, err)
			assert.Zero(t, flags&unix.O_NONBLOCK, "the pipe was left as it was")
		})
	}
}
