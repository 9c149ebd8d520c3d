package prefork_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
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
	// os/signal starts its watcher goroutine on first use, for good.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGHUP)
	signal.Stop(sigs)

	fdsBefore, goroutinesBefore := openFDs(t), runtime.NumGoroutine()
	slackBefore, err := os.ReadFile("/proc/self/timerslack_ns")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, p, wait := runMasterHere(t, ctx, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	assert.Equal(t, "ping", c.ask("ping"))
	c.conn.Close()
	require.Len(t, myChildren(), 2)

	cancel()
	require.NoError(t, wait(), "a cancelled context is a graceful stop")
	assert.Empty(t, myChildren(), "children left")
	assert.Equal(t, fdsBefore, openFDs(t), "descriptors left open")
	slackAfter, err := os.ReadFile("/proc/self/timerslack_ns")
	require.NoError(t, err)
	assert.Equal(t, string(slackBefore), string(slackAfter), "the main thread keeps its timer slack, whichever goroutine locked it")
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
