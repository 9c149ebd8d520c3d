package prefork_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runMasterHere runs a pool whose master is this test process, and waits
// until it is ready. Not for parallel tests: it sets the environment that
// the children inherit.
func runMasterHere(t *testing.T, ctx context.Context, cfg helperConfig, adjust ...func(*prefork.Manager)) (*prefork.Manager, *pool, func() error) {
	t.Helper()
	m, p, wait := startMasterHere(t, ctx, cfg, adjust...)
	p.waitEvent("master", "PostInitChildren")
	return m, p, wait
}

// startMasterHere is runMasterHere without the wait for the pool.
func startMasterHere(t *testing.T, ctx context.Context, cfg helperConfig, adjust ...func(*prefork.Manager)) (*prefork.Manager, *pool, func() error) {
	t.Helper()
	cfg.Events = filepath.Join(t.TempDir(), "events")
	cfg.Quiet = true
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	t.Setenv(envHelper, "1")
	t.Setenv(envConfig, string(js))
	m := newHelperManager(cfg)
	for _, f := range adjust {
		f(m)
	}
	var runErr error
	done := make(chan struct{})
	go func() { runErr = m.Run(ctx); close(done) }()
	wait := func() error {
		t.Helper()
		select {
		case <-done:
			return runErr
		case <-time.After(waitLimit):
			t.Fatal("Run did not return")
			return nil
		}
	}
	p := &pool{t: t, events: cfg.Events, network: "tcp", done: make(chan struct{})}
	p.addr = p.waitEvent("master", "PostBind").Detail
	t.Cleanup(func() {
		m.Close()
		wait()
	})
	return m, p, wait
}

func myChildren() []int { return processes(func(ppid, _ int) bool { return ppid == os.Getpid() }) }

func TestShutdownWaitsForRequestInFlight(t *testing.T) {
	m, p, wait := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	c.sendLast("sleep 300ms")
	p.waitEvent("child", "ProcessRequest")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	require.NoError(t, m.Shutdown(ctx))
	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply)
	require.ErrorIs(t, wait(), prefork.ErrManagerClosed, "Run says the Manager was shut down")
	assert.Empty(t, myChildren())
	assert.NoError(t, m.Shutdown(ctx), "Shutdown after Run returned does nothing")
}

func TestShutdownDeadlineKillsChildren(t *testing.T) {
	m, p, wait := runMasterHere(t, context.Background(), helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, ShutdownTimeout: time.Hour})
	c := p.dial()
	c.send("hang")
	p.waitEvent("child", "ProcessRequest")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.ErrorIs(t, m.Shutdown(ctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), waitLimit, "Shutdown does not wait for ShutdownTimeout")
	require.ErrorIs(t, wait(), prefork.ErrManagerClosed)
	assert.Empty(t, myChildren())
	_, err := c.recv()
	assert.Error(t, err)
}

// RestartChildren and Close return at once; Run then does what they ask.
func TestRestartChildrenFromAGoroutineAndClose(t *testing.T) {
	m, p, wait := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 2})
	before := myChildren()
	m.RestartChildren()
	p.waitFor("new children", func() bool {
		now := myChildren()
		for _, pid := range before {
			for _, n := range now {
				if n == pid {
					return false
				}
			}
		}
		return len(now) >= 2
	})
	require.NoError(t, m.Close())
	assert.ErrorIs(t, wait(), prefork.ErrManagerClosed)
	assert.Empty(t, myChildren())
}

// A graceful stop serves the connections waiting in the listener's queue,
// which no child had taken yet, instead of resetting them when the
// listener closes; new ones are not taken meanwhile. A Unix socket's file
// is removed at the start of the stop, so new clients find no server.
func TestGracefulStopServesQueuedConnections(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			cfg := helperConfig{Network: network, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1}
			if network == "unix" {
				cfg.Addr = filepath.Join(t.TempDir(), "s")
			}
			p := startReady(t, cfg)
			busy, queued := p.queueBehindBusyChild(3)
			p.signal(syscall.SIGTERM)

			reply, err := busy.recv()
			require.NoError(t, err)
			assert.Equal(t, "stopping", reply)
			// The child heard of the stop after the listener stopped taking
			// connections: a new one is not taken.
			if late, err := net.DialTimeout(network, p.addr, 300*time.Millisecond); err == nil {
				late.Close()
				t.Error("a new connection was taken during the stop")
			}
			requireQueuedServed(t, queued)
			if network == "unix" {
				_, err := os.Stat(cfg.Addr)
				assert.ErrorIs(t, err, os.ErrNotExist, "the socket file is gone")
			}
			require.NoError(t, p.wait())
		})
	}
}

// A Shutdown that comes before Run has started (right after go m.Run(ctx))
// is not lost: Run returns ErrManagerClosed at once, starting nothing, as a
// Run does on a Manager that was shut down. Run with a context already done
// returns its error and starts nothing either.
func TestStopBeforeRunStarts(t *testing.T) {
	cfg := helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2, Quiet: true, Events: filepath.Join(t.TempDir(), "events")}
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	t.Setenv(envHelper, "1")
	t.Setenv(envConfig, string(js))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()

	m := newHelperManager(cfg)
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	require.NoError(t, m.Shutdown(ctx))
	select {
	case err := <-done:
		assert.ErrorIs(t, err, prefork.ErrManagerClosed)
	case <-ctx.Done():
		t.Fatal("Run did not return after Shutdown")
	}
	assert.ErrorIs(t, m.Run(context.Background()), prefork.ErrManagerClosed, "a Run after Shutdown")
	assert.Empty(t, myChildren())

	cancelled, stop := context.WithCancel(context.Background())
	stop()
	m = newHelperManager(cfg)
	assert.ErrorIs(t, m.Run(cancelled), context.Canceled)
	assert.Empty(t, myChildren(), "no child started")
}

// A child told to retire that does not answer while it is not busy (here,
// stopped) is killed ShutdownTimeout and a grace later: it must not hold up
// a restart, which retires MinSpareServers children at a time, for good.
func TestRetiredChildThatDoesNotAnswerIsKilled(t *testing.T) {
	m, _, wait := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 4, MinSpare: 1, MaxSpare: 1, ShutdownTimeout: 100 * time.Millisecond})
	s := eventually(t, m, "the pool at rest", func(s prefork.Stats) bool {
		return len(s.Children) == 2 && !slices.ContainsFunc(s.Children, func(c prefork.ChildStats) bool { return c.State != prefork.ChildIdle })
	})
	old := statsPIDs(s)
	for _, pid := range old {
		require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	}
	m.RestartChildren()
	eventually(t, m, "the old children gone, and new ones ready", func(s prefork.Stats) bool {
		return len(s.Children) == 2 && !slices.ContainsFunc(s.Children, func(c prefork.ChildStats) bool {
			return slices.Contains(old, c.PID) || c.State != prefork.ChildIdle
		})
	})
	m.Close()
	assert.ErrorIs(t, wait(), prefork.ErrManagerClosed)
}

// A restart does not wait for an old child's long request: the busy child
// is told to retire and serves on, and the other old children are replaced
// meanwhile. Its request sees Request.Stopping, to end at a clean point.
func TestRestartDoesNotWaitForABusyChild(t *testing.T) {
	m, p, wait := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 6, MinSpare: 1, MaxSpare: 1, ShutdownTimeout: time.Second})
	long, short, watcher := p.dial(), p.dial(), p.dial()
	long.send("sleep 1m") // ignores Stopping: ends with the stop at once
	short.send("sleep 300ms")
	watcher.send("stopping") // answers once its child is to leave
	servedBy := func(s prefork.Stats, cl *client) int {
		for _, c := range s.Children {
			if c.Remote == cl.conn.LocalAddr().String() {
				return c.PID
			}
		}
		return 0
	}
	s := eventually(t, m, "the three requests taken", func(s prefork.Stats) bool {
		return servedBy(s, long) != 0 && servedBy(s, short) != 0 && servedBy(s, watcher) != 0
	})
	old, busyPID := statsPIDs(s), servedBy(s, long)

	m.RestartChildren()
	reply, err := short.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply)
	reply, err = watcher.recv()
	require.NoError(t, err)
	assert.Equal(t, "stopping", reply, "a retired child's request sees Stopping")
	eventually(t, m, "every old child replaced but the busy one, which retires", func(s prefork.Stats) bool {
		for _, c := range s.Children {
			if slices.Contains(old, c.PID) && (c.PID != busyPID || c.State != prefork.ChildRetiring) {
				return false
			}
		}
		return slices.Contains(statsPIDs(s), busyPID)
	})
	m.Close()
	assert.ErrorIs(t, wait(), prefork.ErrManagerClosed)
}
