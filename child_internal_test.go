package prefork

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Retire tells a busy child's request that the child is to leave (Stopping),
// so that a long-lived connection ends at a clean point, but sets it no
// deadline; Stop gives it ShutdownTimeout.
func TestRetireTellsTheRequestButOnlyStopBoundsIt(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	require.NoError(t, err)
	for _, fd := range fds {
		require.NoError(t, unix.SetNonblock(fd, true))
	}
	master, childEnd := os.NewFile(uintptr(fds[0]), "master"), os.NewFile(uintptr(fds[1]), "child")
	defer master.Close()
	defer childEnd.Close()
	waiter, err := sys.NewWaiter(-1)
	require.NoError(t, err)
	defer waiter.Close()

	w := &worker{
		dispatcher: dispatcher{log: slog.New(slog.DiscardHandler)},
		cfg:        config{shutdownTimeout: time.Minute},
		status:     childEnd,
		waiter:     waiter,
		stopping:   make(chan struct{}),
	}
	w.hardCtx, w.hardStop = context.WithCancel(context.Background())
	defer w.hardStop()
	var reading sync.WaitGroup
	reading.Go(w.readRecords)
	defer func() {
		childEnd.SetReadDeadline(time.Now())
		reading.Wait()
		w.setPhase(childFinished, nil)
	}()

	send := func(k wire.Kind) {
		var b [wire.RecordSize]byte
		_, err := master.Write(wire.Encode(&b, wire.Record{Kind: k}))
		require.NoError(t, err)
	}
	send(wire.Retire)
	select {
	case <-w.stopping:
	case <-time.After(10 * time.Second):
		t.Fatal("Retire did not close Stopping")
	}
	assert.Equal(t, childRetiring, childPhase(w.phase.Load()))
	assert.False(t, w.stopped())
	w.mu.Lock()
	assert.Nil(t, w.timer, "Retire does not bound the request")
	w.mu.Unlock()

	send(wire.Stop)
	require.Eventually(t, w.stopped, 10*time.Second, time.Millisecond)
	assert.NoError(t, w.stopCause)
	w.mu.Lock()
	assert.NotNil(t, w.timer, "Stop bounds the request")
	w.mu.Unlock()
}

// A child's phase only moves forward, and once run is over nothing moves
// it or fires.
func TestChildPhaseOnlyMovesForward(t *testing.T) {
	waiter, err := sys.NewWaiter(-1)
	require.NoError(t, err)
	defer waiter.Close()
	w := &worker{dispatcher: dispatcher{log: slog.New(slog.DiscardHandler)}, cfg: config{shutdownTimeout: time.Minute}, waiter: waiter, stopping: make(chan struct{})}
	w.hardCtx, w.hardStop = context.WithCancel(context.Background())
	defer w.hardStop()

	w.setPhase(childStopping, ErrMasterGone)
	w.setPhase(childRetiring, nil)
	assert.Equal(t, childStopping, childPhase(w.phase.Load()), "a stop is not undone by a retire")
	assert.ErrorIs(t, w.stopCause, ErrMasterGone)
	w.setPhase(childStopping, nil)
	assert.ErrorIs(t, w.stopCause, ErrMasterGone, "the first cause stays")

	w.setPhase(childHardStopping, nil)
	assert.Error(t, w.hardCtx.Err(), "a hard stop cancels the request")
	w.setPhase(childFinished, nil)
	w.mu.Lock()
	assert.Nil(t, w.timer, "no timer after run")
	w.mu.Unlock()
	w.setPhase(childStopping, nil)
	assert.Equal(t, childFinished, childPhase(w.phase.Load()))
}
