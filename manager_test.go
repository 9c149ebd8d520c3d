package prefork_test

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPoolStartsAtMinServersAndEchoes(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 3, Max: 6, MinSpare: 1, MaxSpare: 5})
	assert.Len(t, p.children(), 3)
	c := p.dial()
	assert.Equal(t, "hello, world", c.ask("hello, world"))
	assert.Equal(t, "again", c.ask("again"))
	assert.Len(t, p.children(), 3, "one busy child leaves two idle, above MinSpareServers")
}

func TestBurstIsServedConcurrentlyThenPoolShrinks(t *testing.T) {
	t.Parallel()
	const burst = 8
	p := startReady(t, helperConfig{Min: 2, Max: 10, MinSpare: 1, MaxSpare: 2})

	// Each client holds its connection, so each needs a child of its own:
	// all of them are answered only if the pool grows to serve them at once.
	clients := make([]*client, burst)
	pids := make([]int, burst)
	var wg sync.WaitGroup
	for i := range clients {
		clients[i] = p.dial()
		wg.Go(func() {
			clients[i].send("pid")
			reply, err := clients[i].recv()
			if assert.NoError(t, err) {
				pids[i], _ = strconv.Atoi(reply)
			}
		})
	}
	wg.Wait()
	slices.Sort(pids)
	assert.Len(t, slices.Compact(slices.Clone(pids)), burst, "every held connection has a child of its own: %v", pids)
	assert.GreaterOrEqual(t, len(p.children()), burst)
	assert.LessOrEqual(t, len(p.children()), 10)

	for _, c := range clients {
		c.conn.Close()
	}
	p.waitFor("the pool to shrink to MinServers+MaxSpareServers", func() bool { return len(p.children()) <= 2+2 })
}

func TestKilledChildIsReplaced(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2})
	victim := p.askPID()
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	p.waitFor("a replacement child", func() bool {
		kids := p.children()
		return len(kids) == 2 && !slices.Contains(kids, victim)
	})
	served := map[int]bool{}
	for range 6 {
		served[p.askPID()] = true
	}
	assert.Subset(t, p.children(), slices.Collect(maps.Keys(served)), "live children serve")
	select {
	case <-p.done:
		t.Fatalf("master exited: %v", p.err)
	default:
	}
}

func TestMaxRequestsRetiresChildren(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2, MaxRequests: 3})
	served := map[int]int{}
	const requests = 21
	for range requests {
		served[p.askPID()]++
	}
	for pid, n := range served {
		assert.LessOrEqual(t, n, 3, "child %d served %d requests", pid, n)
	}
	assert.GreaterOrEqual(t, len(served), requests/3)
}

func TestGracefulStopFinishesRequestInFlight(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	start := time.Now()
	c.sendLast("sleep 700ms")
	p.waitEvent("child", "ProcessRequest")
	p.signal(syscall.SIGTERM)

	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply, "the request in flight completes")
	require.NoError(t, p.wait(), "the master exits cleanly")
	assert.GreaterOrEqual(t, time.Since(start), 700*time.Millisecond, "the master waited for the request")
	assert.Empty(t, p.group(), "no process is left")
	evs := p.readEvents()
	assert.Equal(t, "PreServerClose", evs[len(evs)-1].Hook)
}

func TestStoppingIsClosedWhenStopBegins(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1})
	c := p.dial()
	c.send("stopping")
	p.waitEvent("child", "ProcessRequest")
	p.signal(syscall.SIGTERM)
	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "stopping", reply)
	require.NoError(t, p.wait())
}

func TestShutdownTimeoutCancelsRequest(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, ShutdownTimeout: 300 * time.Millisecond})
	c := p.dial()
	c.send("sleep 1m")
	p.waitEvent("child", "ProcessRequest")
	start := time.Now()
	p.signal(syscall.SIGTERM)
	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "cancelled", reply, "the request's ctx is cancelled at ShutdownTimeout")
	assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "and not before")
	require.NoError(t, p.wait())
	assert.Empty(t, p.group())
}

func TestSecondSignalStopsAtOnce(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, ShutdownTimeout: time.Hour})
	c := p.dial()
	c.send("sleep 1h")
	p.waitEvent("child", "ProcessRequest")
	p.signal(syscall.SIGTERM)
	p.waitEvent("master", "Signal")
	p.signal(syscall.SIGINT)
	require.NoError(t, p.wait())
	_, err := c.recv()
	assert.Error(t, err, "the request was cut off")
	assert.Empty(t, p.group())
}

func TestChildrenExitWhenMasterIsKilled(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 3, Max: 4, MinSpare: 1, MaxSpare: 3})
	kids := p.children()
	require.Len(t, kids, 3)
	require.NoError(t, syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL))
	<-p.done
	deadline := time.Now().Add(waitLimit) // not p.waitFor: the master is gone
	for len(p.group()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assert.Empty(t, p.group(), "orphaned children: %v", p.group())
}

func TestHUPCallsHookAndPoolGoesOn(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2})
	before := p.children()
	p.signal(syscall.SIGHUP)
	ev := p.waitEvent("master", "Signal")
	assert.Equal(t, syscall.SIGHUP.String(), ev.Detail)
	c := p.dial()
	assert.Equal(t, "still here", c.ask("still here"))
	c.conn.Close()
	// The end of the pool is the sync point: every child that ever ran
	// has left its Shutdown event by then, and a restart would have left
	// more of them.
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	assert.ElementsMatch(t, before, shutdownPIDs(p), "SIGHUP does not touch the children")
}

// shutdownPIDs lists the children that ran their Shutdown hook after a
// normal end, once the pool has stopped.
func shutdownPIDs(p *pool) []int {
	var pids []int
	for _, ev := range p.readEvents() {
		if ev.Role == "child" && ev.Hook == "Shutdown" && ev.Detail == "<nil>" {
			pids = append(pids, ev.PID)
		}
	}
	return pids
}

func TestHooksAreCalledInOrder(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, DenySecond: true})
	pid := p.askPID()
	c := p.dial()
	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "denied", reply, "the second request of the child is denied")
	_, err = c.recv()
	assert.Error(t, err, "and closed")
	assert.Equal(t, pid, p.askPID())
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())

	var master, child []string
	for _, ev := range p.readEvents() {
		switch {
		case ev.Role == "master":
			master = append(master, ev.Hook)
		case ev.PID == pid && ev.Hook != "AfterRun": // the helper's report, not a hook
			child = append(child, ev.Hook)
		}
	}
	assert.Equal(t, []string{
		"PreBind", "PostBind", "PreSignalSetup", "PostSignalSetup", "PreInitChildren",
		"PoolResized", "ChildStarted", "PostInitChildren", "PreLoop", "Signal", "ChildExited", "PoolResized", "PreServerClose",
	}, master)
	assert.Equal(t, []string{
		"Initialize",
		"PostAccept", "AllowDeny", "ProcessRequest", "PostProcessRequest",
		"PostAccept", "AllowDeny", "RequestDenied", "PostProcessRequest",
		"PostAccept", "AllowDeny", "ProcessRequest", "PostProcessRequest",
		"Shutdown",
	}, child)
}

func TestChildrenThatCannotStartStopRun(t *testing.T) {
	t.Parallel()
	for _, slow := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(fmt.Sprint("failing after ", slow), func(t *testing.T) {
			t.Parallel()
			checkStartsGiveUp(t, helperConfig{FailInit: true, FailInitAfter: slow}, "initialization refused by the test")
		})
	}
	// As the OOM killer ends a child whose Initialize takes too much
	// memory: a SIGKILL the master did not send is a failed start too.
	t.Run("killed", func(t *testing.T) {
		t.Parallel()
		checkStartsGiveUp(t, helperConfig{KillInit: true}, "signal: killed")
	})
}

// checkStartsGiveUp runs a pool whose children fail to initialize as cfg
// says, and checks that the master backs off, and gives up with an error
// that contains want.
func checkStartsGiveUp(t *testing.T, cfg helperConfig, want string) {
	start := time.Now()
	cfg.Min, cfg.Max, cfg.MinSpare, cfg.MaxSpare = 2, 4, 1, 2
	p := startPool(t, cfg)
	err := p.waitWithin(3 * waitLimit) // 5 s of failures at least, then each slow start's own
	assert.GreaterOrEqual(t, time.Since(start), 5*time.Second, "failures are judged over time, not counted as they come")
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 1, exit.ExitCode())
	log, _ := os.ReadFile(p.log)
	assert.Contains(t, string(log), prefork.ErrChildStart.Error())
	assert.Contains(t, string(log), want)
	assert.Empty(t, p.group())
	inits := 0
	for _, ev := range p.readEvents() {
		if ev.Hook == "Initialize" {
			inits++
		}
	}
	// The first two together, then one per step of the back-off (50 ms,
	// doubling) until children have failed for 5 s: 9. A start whose child
	// is still starting when the next is due counts as a step, so a slow
	// failure does not let starts pile up at the first steps' pace.
	assert.LessOrEqual(t, inits, 10, "the master backs off instead of respawning in a loop")
}

// With signal.NotifyContext in main, as many programs have, and SIGTERM
// sent to the whole process group, as systemd does, Run's cancelled ctx
// and the signal are one graceful stop in every process: the request in
// flight completes.
func TestGroupSIGTERMWithNotifyContextIsGraceful(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2, NotifyContext: true, ShutdownTimeout: time.Minute})
	c := p.dial()
	c.sendLast("sleep 500ms")
	p.waitEvent("child", "ProcessRequest")
	require.NoError(t, syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM))
	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply)
	require.NoError(t, p.wait())
	assert.NotContains(t, p.logText(), "stop now")
	assert.Empty(t, p.group())
}

// One child that fails to start must not leave the pool short: the next
// start succeeds and the pool is whole again.
func TestPoolRecoversAfterOneStartFailure(t *testing.T) {
	t.Parallel()
	flag := filepath.Join(t.TempDir(), "fail-once")
	p := startReady(t, helperConfig{Min: 3, Max: 4, MinSpare: 1, MaxSpare: 3, FailInitFlag: flag})
	victim := p.children()[0]
	require.NoError(t, os.WriteFile(flag, nil, 0o600))
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	p.waitFor("the failed start", func() bool { return strings.Contains(p.logText(), "initialization refused once") })
	p.waitFor("the pool to be whole again", func() bool { return len(p.children()) == 3 })
}

func TestChildMaxProcs(t *testing.T) {
	t.Parallel()
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		t.Skip("GOMAXPROCS is set in the environment, and wins")
	}
	for _, c := range []struct {
		setting int
		want    int
	}{{0, 1}, {-1, runtime.GOMAXPROCS(0)}, {3, 3}} {
		p := startReady(t, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, ChildMaxProcs: c.setting, Quiet: true})
		// The master's GOMAXPROCS for the child is gone from its
		// environment, so that programs it starts do not inherit it.
		assert.Equal(t, strconv.Itoa(c.want)+" ", p.waitEvent("child", "Initialize").Detail, "ChildMaxProcs %d", c.setting)
	}
}

// A handler may read in one goroutine while another writes: the child's
// connection is safe for that, and its waits let the writer run.
func TestHandlerGoroutinesShareTheConnection(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	c.send("duplex 50")
	for i := range 50 {
		line, err := c.recv()
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("tick %d", i), line)
	}
	assert.Equal(t, "still reading", c.ask("still reading"))
}

// With NoSignals the library takes no signal: the program's own handler
// gets SIGTERM, in the master (which it stops with Shutdown) and in a child
// (which goes on serving).
func TestNoSignalsLeavesSignalsToTheProgram(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, OwnSignals: true})
	child := p.askPID()
	require.NoError(t, syscall.Kill(child, syscall.SIGTERM))
	p.waitEvent("child", "ProgramSIGTERM")
	assert.Equal(t, child, p.askPID(), "the child goes on serving")

	p.signal(syscall.SIGTERM)
	p.waitEvent("master", "ProgramSIGTERM")
	require.NoError(t, p.wait(), "the program stopped the pool with Shutdown")
	assert.Empty(t, p.group())
}

// What each signal does by default, as a table: the integration tests see
// the effects, which come later than the signal.
func TestDefaultSignal(t *testing.T) {
	for _, tc := range []struct {
		sig      syscall.Signal
		stopping bool
		want     prefork.SignalAction
	}{
		{syscall.SIGTERM, false, prefork.ActionStop},
		{syscall.SIGINT, false, prefork.ActionStop},
		{syscall.SIGTERM, true, prefork.ActionStopNow},
		{syscall.SIGINT, true, prefork.ActionStopNow},
		{syscall.SIGHUP, false, prefork.ActionContinue},
		{syscall.SIGHUP, true, prefork.ActionContinue},
	} {
		assert.Equal(t, tc.want, prefork.DefaultSignal(tc.sig, tc.stopping), "%v, stopping %v", tc.sig, tc.stopping)
	}
}
