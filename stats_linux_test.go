package prefork_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statsPIDs returns the pids in a snapshot, sorted.
func statsPIDs(s prefork.Stats) []int {
	var pids []int
	for _, c := range s.Children {
		pids = append(pids, c.PID)
	}
	slices.Sort(pids)
	return pids
}

// live returns this process's children that have not exited, sorted.
func live() []int {
	pids := myChildren()
	slices.Sort(pids)
	return pids
}

// eventually waits until ok holds for a snapshot, and returns it.
func eventually(t *testing.T, m *prefork.Manager, what string, ok func(prefork.Stats) bool) prefork.Stats {
	t.Helper()
	var s prefork.Stats
	if !assert.Eventually(t, func() bool { s = m.Stats(); return ok(s) }, waitLimit, 5*time.Millisecond, what) {
		t.Fatalf("last snapshot: %+v", s)
	}
	return s
}

func TestStatsFollowThePool(t *testing.T) {
	m, p, _ := runMasterHere(t, context.Background(), helperConfig{Min: 3, Max: 4, MinSpare: 1, MaxSpare: 4, MaxRequests: 2})
	s := eventually(t, m, "the pool at rest", func(s prefork.Stats) bool {
		return len(s.Children) >= 3 && slices.Equal(statsPIDs(s), live())
	})
	assert.Equal(t, prefork.Limits{MinServers: 3, MaxServers: 4, MinSpareServers: 1, MaxSpareServers: 4}, s.Limits)
	assert.Equal(t, 2, s.MaxRequests)
	assert.Equal(t, "tcp", s.Network)
	assert.Equal(t, p.addr, s.Addr)
	assert.Equal(t, uint64(len(s.Children)), s.Started)
	for _, c := range s.Children {
		assert.Contains(t, []prefork.ChildState{prefork.ChildIdle, prefork.ChildParked}, c.State)
		assert.False(t, c.Started.IsZero())
	}

	// A request in hand shows as a busy child, since when, and the queue
	// is read while it is busy.
	c := p.dial()
	c.send("sleep 400ms")
	s = eventually(t, m, "a busy child", func(s prefork.Stats) bool {
		return slices.ContainsFunc(s.Children, func(c prefork.ChildStats) bool { return c.State == prefork.ChildBusy })
	})
	i := slices.IndexFunc(s.Children, func(c prefork.ChildStats) bool { return c.State == prefork.ChildBusy })
	assert.WithinDuration(t, time.Now(), s.Children[i].BusySince, waitLimit)
	assert.Equal(t, c.conn.LocalAddr().String(), s.Children[i].Remote, "the client it serves")
	assert.GreaterOrEqual(t, s.Queued, 0, "a TCP listener's queue can be read")
	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply)
	c.conn.Close()

	// Each way out is counted as what it is, and the snapshot follows the
	// processes through it.
	victim := statsPIDs(s)[0]
	require.NoError(t, syscall.Kill(victim, syscall.SIGKILL))
	eventually(t, m, "the SIGKILL counted", func(s prefork.Stats) bool { return s.Exits[prefork.ExitSignaled] == 1 })

	for range 4 { // MaxRequests is 2: some child reaches it
		c := p.dial()
		assert.NotEmpty(t, c.ask("pid"))
		c.conn.Close()
	}
	eventually(t, m, "MaxRequests counted", func(s prefork.Stats) bool { return s.Exits[prefork.ExitMaxRequests] >= 1 })

	c = p.dial()
	c.send("panic")
	eventually(t, m, "the panic counted", func(s prefork.Stats) bool { return s.Exits[prefork.ExitCrashed] == 1 })

	restarted := time.Now()
	m.RestartChildren()
	s = eventually(t, m, "the restart counted, and the pool whole again", func(s prefork.Stats) bool {
		for _, c := range s.Children {
			if c.Started.Before(restarted) {
				return false
			}
		}
		return s.Exits[prefork.ExitRestarted] >= 1 && len(s.Children) >= 3 && slices.Equal(statsPIDs(s), live())
	})
	total := uint64(0)
	for _, n := range s.Exits {
		total += n
	}
	assert.Equal(t, s.Started, total+uint64(len(s.Children)), "every child started has exited or is in the snapshot")
	assert.Positive(t, s.Requests)

	// The hooks saw the same exits.
	exited := 0
	for _, e := range p.readEvents() {
		if e.Hook == "ChildExited" {
			exited++
		}
	}
	assert.Equal(t, int(total), exited)
}

func TestStatsCountRequestTimeouts(t *testing.T) {
	m, p, _ := runMasterHere(t, context.Background(), helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 2, RequestTimeout: 200 * time.Millisecond})
	c := p.dial()
	c.send("hang")
	eventually(t, m, "the timeout counted", func(s prefork.Stats) bool { return s.Exits[prefork.ExitRequestTimeout] == 1 })
}

func TestStatsCountMaxServersReached(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			cfg := helperConfig{Network: network, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1}
			if network == "unix" {
				cfg.Addr = filepath.Join(t.TempDir(), "s")
			}
			m, p, _ := runMasterHere(t, context.Background(), cfg)
			p.network = network
			held := p.dial()
			held.send("sleep 2s")
			p.waitEvent("child", "ProcessRequest")
			waiting := p.dial() // queued: the only child is busy, and the pool cannot grow
			defer waiting.conn.Close()
			s := eventually(t, m, "MaxServers reached", func(s prefork.Stats) bool { return s.MaxServersReached >= 1 })
			assert.GreaterOrEqual(t, s.MaxQueued, 1, "the queue is read")
			held.conn.Close()
		})
	}
}

// With several sockets, Stats shows each, with its own queue.
func TestStatsShowEachSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s")
	sockets := []prefork.Socket{{Name: "web", Addr: "127.0.0.1:0"}, {Name: "local", Network: "unix", Addr: path}}
	m, p, _ := runMasterHere(t, context.Background(), helperConfig{Sockets: sockets, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	held := p.dial()
	held.send("sleep 3s")
	p.waitEvent("child", "ProcessRequest")
	for range 2 {
		defer dialClient(t, "unix", path).conn.Close()
	}
	defer p.dial().conn.Close()
	s := eventually(t, m, "both queues read", func(s prefork.Stats) bool {
		return len(s.Sockets) == 2 && s.Sockets[0].Queued == 1 && s.Sockets[1].Queued == 2
	})
	assert.Equal(t, prefork.SocketStats{Name: "web", Network: "tcp", Addr: p.addr, Queued: 1, MaxQueued: 1}, s.Sockets[0])
	assert.Equal(t, prefork.SocketStats{Name: "local", Network: "unix", Addr: path, Queued: 2, MaxQueued: 2}, s.Sockets[1])
	assert.Equal(t, 3, s.Queued, "the sum")
	assert.Equal(t, "tcp", s.Network, "the first socket's")
	assert.Equal(t, p.addr, s.Addr)
	held.conn.Close()
}

// syncBuffer is a bytes.Buffer for a log handler that several goroutines
// write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) records() []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(b.b.Bytes(), []byte("\n")) {
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

func TestSIGUSR1LogsTheStats(t *testing.T) {
	var logged syncBuffer
	m, _, _ := runMasterHere(t, context.Background(), helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2}, func(m *prefork.Manager) {
		m.Logger = slog.New(slog.NewJSONHandler(&logged, nil))
	})
	s := eventually(t, m, "two children", func(s prefork.Stats) bool { return len(s.Children) >= 2 })
	require.NoError(t, syscall.Kill(statsPIDs(s)[0], syscall.SIGKILL))
	eventually(t, m, "the kill counted", func(s prefork.Stats) bool { return s.Exits[prefork.ExitSignaled] == 1 })
	require.NoError(t, syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)) // the master is this process
	var stats map[string]any
	require.Eventually(t, func() bool {
		for _, rec := range logged.records() {
			if _, ok := rec["children"]; ok && rec["states"] != nil {
				stats = rec
				return true
			}
		}
		return false
	}, waitLimit, 5*time.Millisecond, "no stats record after SIGUSR1")
	assert.GreaterOrEqual(t, stats["children"], float64(1))
	assert.Contains(t, stats, "requests")
	assert.Equal(t, map[string]any{"signaled": float64(1)}, stats["exits"])
}

func TestSlowRequestsAreCounted(t *testing.T) {
	m, p, _ := runMasterHere(t, context.Background(), helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 2, SlowRequest: 100 * time.Millisecond})
	c := p.dial()
	c.send("sleep 400ms")
	eventually(t, m, "one slow request", func(s prefork.Stats) bool { return s.SlowRequests == 1 })
	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply)
}
