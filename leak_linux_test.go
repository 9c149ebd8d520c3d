package prefork_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func openFDs(t *testing.T) int {
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(fds)
}

// The test process is the master here, so that its goroutines and
// descriptors can be counted after Run returns. Not parallel: it sets the
// environment that its children inherit.
func TestRunLeavesNoProcessDescriptorOrGoroutine(t *testing.T) {
	cfg := helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2, Quiet: true, Events: filepath.Join(t.TempDir(), "events")}
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	t.Setenv(envHelper, "1")
	t.Setenv(envConfig, string(js))
	// os/signal starts its watcher goroutine on first use, for good.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP)
	signal.Stop(sigs)

	fdsBefore, goroutinesBefore := openFDs(t), runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- newHelperManager(cfg).Run(ctx) }()

	p := &pool{t: t, events: cfg.Events, network: "tcp", done: make(chan struct{})}
	p.addr = p.waitEvent("master", "PostBind").Detail
	p.waitEvent("master", "PostInitChildren")
	c := p.dial()
	assert.Equal(t, "ping", c.ask("ping"))
	c.conn.Close()
	require.Len(t, processes(func(ppid, _ int) bool { return ppid == os.Getpid() }), 2)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "a cancelled context is a graceful stop")
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after its context was cancelled")
	}
	assert.Empty(t, processes(func(ppid, _ int) bool { return ppid == os.Getpid() }), "children left")
	assert.Equal(t, fdsBefore, openFDs(t), "descriptors left open")
	deadline := time.Now().Add(waitLimit)
	for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // goroutines that have finished their work but not yet exited
	}
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutinesBefore, "goroutines left")
}

// A child's Run closes what the master handed it (the status socket and
// the listener) and leaves no descriptor or goroutine of its own.
func TestChildRunLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 2, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	assert.Equal(t, "x", c.ask("x"))
	c.conn.Close()
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	reports := 0
	for _, ev := range p.readEvents() {
		if ev.Hook != "AfterRun" {
			continue
		}
		reports++
		var fdsBefore, fdsAfter, gBefore, gAfter int
		_, err := fmt.Sscanf(ev.Detail, "fds %d->%d goroutines %d->%d", &fdsBefore, &fdsAfter, &gBefore, &gAfter)
		require.NoError(t, err)
		assert.Equal(t, fdsBefore-2, fdsAfter, "child %d: %s", ev.PID, ev.Detail)
		// os/signal's watcher starts with the first Notify and stays.
		assert.LessOrEqual(t, gAfter, gBefore+1, "child %d: %s", ev.PID, ev.Detail)
	}
	assert.Equal(t, 2, reports)
}
