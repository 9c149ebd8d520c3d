package prefork_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSetLimitsWithoutAPool(t *testing.T) {
	err := (&prefork.Manager{}).SetLimits(prefork.Limits{MinServers: 1, MaxServers: 1})
	require.ErrorIs(t, err, prefork.ErrNotRunning)
}

// The pool follows SetLimits up and down while clients keep it busy, and
// none of their requests fails.
func TestSetLimitsUnderLoad(t *testing.T) {
	m, p, _ := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 6, MinSpare: 1, MaxSpare: 6})
	eventually(t, m, "the pool at its start", func(s prefork.Stats) bool { return len(s.Children) >= 2 })

	for _, bad := range []prefork.Limits{
		{MinServers: 1, MaxServers: 7, MaxSpareServers: 1}, // above the ceiling of 6
		{MinServers: 0, MaxServers: 2},
		{MinServers: 3, MaxServers: 2},
		{MinServers: 1, MaxServers: 2, MinSpareServers: 2, MaxSpareServers: 1},
	} {
		require.ErrorIs(t, m.SetLimits(bad), prefork.ErrInvalidConfig, "%+v", bad)
	}

	// Clients ask for pids, one request per connection, all through.
	var served, failed atomic.Int64
	stop := make(chan struct{})
	var clients sync.WaitGroup
	for range 3 {
		clients.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if pid, err := tryPID(p.network, p.addr); err != nil || pid == "" {
					failed.Add(1)
				} else {
					served.Add(1)
				}
			}
		})
	}
	defer func() {
		close(stop)
		clients.Wait()
		assert.Zero(t, failed.Load(), "requests failed during the resizes")
		assert.Positive(t, served.Load())
	}()

	grown := prefork.Limits{MinServers: 5, MaxServers: 6, MinSpareServers: 1, MaxSpareServers: 6}
	require.NoError(t, m.SetLimits(grown))
	eventually(t, m, "grown to 5", func(s prefork.Stats) bool { return s.Limits == grown && len(s.Children) >= 5 })

	shrunk := prefork.Limits{MinServers: 1, MaxServers: 2, MinSpareServers: 0, MaxSpareServers: 1}
	require.NoError(t, m.SetLimits(shrunk))
	eventually(t, m, "shrunk to 2 at most", func(s prefork.Stats) bool {
		return s.Limits == shrunk && len(s.Children) <= 2 && len(live()) <= 2
	})
}

// tryPID asks the pool for a child's pid on a connection of its own, from
// any goroutine.
func tryPID(network, addr string) (string, error) {
	conn, err := net.DialTimeout(network, addr, waitLimit)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLimit))
	if _, err := conn.Write([]byte("pid\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

func TestSIGTTINAndSIGTTOUStepTheSize(t *testing.T) {
	m, _, _ := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 3})
	eventually(t, m, "the pool at its start", func(s prefork.Stats) bool { return len(s.Children) >= 2 })
	self := func(sig syscall.Signal) { require.NoError(t, syscall.Kill(syscall.Getpid(), sig)) } // the master is this process

	self(syscall.SIGTTIN)
	eventually(t, m, "one more", func(s prefork.Stats) bool { return s.Limits.MinServers == 3 && s.Limits.MaxServers == 3 })
	// Signals of one kind that come together count once: one at a time.
	self(syscall.SIGTTOU)
	eventually(t, m, "one fewer", func(s prefork.Stats) bool { return s.Limits.MinServers == 2 })
	self(syscall.SIGTTOU)
	s := eventually(t, m, "down to 1", func(s prefork.Stats) bool { return s.Limits.MinServers == 1 })
	assert.Equal(t, 3, s.Limits.MaxServers, "SIGTTOU lowers MinServers only")
	require.False(t, errors.Is(m.SetLimits(s.Limits), prefork.ErrNotRunning))
}
