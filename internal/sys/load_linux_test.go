package sys

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Queued counts the connections that wait in a listener's accept queue, and
// tells a datagram socket with something to read from an empty one.
func TestQueued(t *testing.T) {
	f, addr, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	defer f.Close()
	fd := int(rawFD(t, f))
	assert.Equal(t, 0, Queued(fd, "tcp"))
	for range 3 {
		c, err := net.Dial("tcp", addr.String())
		require.NoError(t, err)
		defer c.Close()
	}
	assert.Equal(t, 3, Queued(fd, "tcp"))

	p, paddr, err := Listen("udp", "127.0.0.1:0", 0, false)
	require.NoError(t, err)
	defer p.Close()
	pfd := int(rawFD(t, p))
	assert.Equal(t, 0, Queued(pfd, "udp"))
	c, err := net.Dial("udp", paddr.String())
	require.NoError(t, err)
	defer c.Close()
	for range 2 {
		_, err = c.Write([]byte("datagram"))
		require.NoError(t, err)
	}
	assert.Equal(t, 1, Queued(pfd, "udp"), "something waits; datagrams are not counted")

	path := t.TempDir() + "/s"
	u, _, err := Listen("unix", path, 16, false)
	require.NoError(t, err)
	defer u.Close()
	ufd := int(rawFD(t, u))
	assert.Equal(t, 0, Queued(ufd, "unix"))
	for range 2 {
		c, err := net.Dial("unix", path)
		require.NoError(t, err)
		defer c.Close()
	}
	assert.Equal(t, 2, Queued(ufd, "unix"), "read through the kernel's socket diagnostics")

	g, gaddr, err := Listen("unixgram", t.TempDir()+"/g", 0, false)
	require.NoError(t, err)
	defer g.Close()
	gfd := int(rawFD(t, g))
	assert.Equal(t, 0, Queued(gfd, "unixgram"))
	gc, err := net.Dial("unixgram", gaddr.String())
	require.NoError(t, err)
	defer gc.Close()
	_, err = gc.Write([]byte("datagram"))
	require.NoError(t, err)
	assert.Equal(t, 1, Queued(gfd, "unixgram"))
}

// A netlink reply that is not the one asked for reads as unknown.
func TestParseUnixDiag(t *testing.T) {
	assert.Equal(t, -1, parseUnixDiag(nil, 1))
	assert.Equal(t, -1, parseUnixDiag(make([]byte, 40), 1), "no header")
}

// The machine's CPU times move, and idle time is part of the total.
func TestReadCPUTimes(t *testing.T) {
	a, ok := ReadCPUTimes()
	require.True(t, ok)
	time.Sleep(30 * time.Millisecond) // clock ticks are 10 ms: some must pass
	b, ok := ReadCPUTimes()
	require.True(t, ok)
	assert.Greater(t, b.Total, a.Total)
	assert.LessOrEqual(t, b.Idle-a.Idle, b.Total-a.Total)
}

// Runnable tells a process that runs from one that sleeps.
func TestRunnable(t *testing.T) {
	sleeper := exec.Command("sleep", "30")
	require.NoError(t, sleeper.Start())
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	spinner := exec.Command(os.Args[0], "-test.run=^TestSpin$")
	spinner.Env = append(os.Environ(), "SYS_TEST_SPIN=1")
	require.NoError(t, spinner.Start())
	defer func() { spinner.Process.Kill(); spinner.Wait() }()

	// A process may be caught between states: ask until it answers as
	// expected, a bounded number of times.
	seen := func(pid int, want bool) bool {
		for range 200 {
			runnable, ok := Runnable(pid)
			require.True(t, ok)
			if runnable == want {
				return true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return false
	}
	assert.True(t, seen(sleeper.Process.Pid, false), "sleep sleeps")
	assert.True(t, seen(spinner.Process.Pid, true), "a spinning process runs")
	_, ok := Runnable(1 << 30)
	assert.False(t, ok, "no such process")
}

func TestSpin(t *testing.T) {
	if os.Getenv("SYS_TEST_SPIN") == "" {
		t.Skip("run by TestRunnable")
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
	}
}

// A poller that does not listen is not woken for a connection, and takes
// it up again when it listens.
func TestPollerListen(t *testing.T) {
	f, addr, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	defer f.Close()
	fd := int(rawFD(t, f))
	w, err := NewWaiter(-1)
	require.NoError(t, err)
	defer w.Close()
	p, err := NewPoller([]int{fd}, w)
	require.NoError(t, err)
	defer p.Close()
	w.Pin(1 << 20) // waits may hold the P, whatever else runs

	changed, err := p.Listen(true)
	require.NoError(t, err)
	assert.True(t, changed, "a new poller does not listen")
	changed, err = p.Listen(false)
	require.NoError(t, err)
	assert.True(t, changed)
	changed, err = p.Listen(false)
	require.NoError(t, err)
	assert.False(t, changed, "already out")

	c, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	defer c.Close()
	go func() { time.Sleep(100 * time.Millisecond); w.Wake() }()
	listener, err := p.Wait()
	require.NoError(t, err)
	assert.False(t, listener, "woken by Wake, not by the connection")
	assert.Zero(t, w.HeldWaits(), "a poller that does not listen sleeps without holding the P")

	_, err = p.Listen(true)
	require.NoError(t, err)
	w.streak.Store(true) // as after a short wait: a new Waiter does not hold
	listener, err = p.Wait()
	require.NoError(t, err)
	assert.True(t, listener, "the queued connection wakes it once it listens")
	assert.Equal(t, uint64(1), w.HeldWaits(), "and a listening poller holds the P")
}

// A Waiter holds the P only in a streak of short waits: not in its first
// wait, in the wait after a short one, and not after one that outlasted
// holdLimit.
func TestWaiterHoldsOnlyInAStreak(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	fd := int(rawFD(t, r))
	waiter, err := NewWaiter(-1)
	require.NoError(t, err)
	defer waiter.Close()
	waiter.Pin(1 << 20) // waits may hold the P, whatever else runs

	// waitFor waits until the pipe is readable, written to after delay,
	// and empties it.
	waitFor := func(delay time.Duration) {
		t.Helper()
		time.AfterFunc(delay, func() { w.Write([]byte{1}) })
		got, err := waiter.WaitFD(fd, unix.POLLIN, time.Now().Add(10*time.Second), waiter.Wakes())
		require.NoError(t, err)
		require.Equal(t, FDReady, got)
		_, err = r.Read(make([]byte, 1))
		require.NoError(t, err)
	}
	const short = 20 * time.Millisecond

	waitFor(short)
	assert.Zero(t, waiter.HeldWaits(), "a new Waiter waits the ordinary way")
	waitFor(short)
	assert.Equal(t, uint64(1), waiter.HeldWaits(), "after a short wait, it holds the P")
	waitFor(holdLimit + 50*time.Millisecond)
	assert.Equal(t, uint64(2), waiter.HeldWaits(), "that wait held it too")
	waitFor(short)
	assert.Equal(t, uint64(2), waiter.HeldWaits(), "after a long wait, it does not")
}
