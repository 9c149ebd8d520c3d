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

// Retire lets a busy child finish its request in peace; Stop tells the
// request that the pool stops.
func TestRetireDoesNotHurryTheRequestButStopDoes(t *testing.T) {
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
		cfg:      config{shutdownTimeout: time.Minute},
		log:      slog.New(slog.DiscardHandler),
		status:   childEnd,
		waiter:   waiter,
		stopping: make(chan struct{}),
	}
	w.hardCtx, w.hardStop = context.WithCancel(context.Background())
	defer w.hardStop()
	var reading sync.WaitGroup
	reading.Go(w.readRecords)
	defer func() {
		childEnd.SetReadDeadline(time.Now())
		reading.Wait()
		w.mu.Lock()
		w.finished = true
		for _, tm := range w.timers {
			tm.Stop()
		}
		w.mu.Unlock()
	}()

	send := func(k wire.Kind) {
		var b [wire.RecordSize]byte
		_, err := master.Write(wire.Encode(&b, wire.Record{Kind: k}))
		require.NoError(t, err)
	}
	send(wire.Retire)
	require.Eventually(t, w.retired.Load, 10*time.Second, time.Millisecond)
	assert.False(t, w.stopped(), "Retire does not close Stopping")
	w.mu.Lock()
	assert.Empty(t, w.timers, "nor bound the request")
	w.mu.Unlock()

	send(wire.Stop)
	select {
	case <-w.stopping:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not close Stopping")
	}
	assert.NoError(t, w.stopCause)
	w.mu.Lock()
	assert.Len(t, w.timers, 2, "Stop bounds the request")
	w.mu.Unlock()
}
