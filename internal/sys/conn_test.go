//go:build unix

package sys

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// connPair returns a served connection, the client's end, and the Waiter
// behind the served one.
func connPair(t *testing.T) (*Conn, net.Conn, *Waiter) {
	t.Helper()
	f, addr, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	fd := int(rawFD(t, f))
	waiter, err := NewWaiter(-1)
	require.NoError(t, err)
	t.Cleanup(waiter.Close)
	client, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	t.Cleanup(func() { client.Close() })
	_, err = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10_000)
	require.NoError(t, err)
	conn, err := Accept(fd, "tcp", waiter)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn, client, waiter
}

func TestConnEcho(t *testing.T) {
	conn, client, _ := connPair(t)
	// More than the socket buffers hold, so that Write waits for room.
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<18)
	go func() {
		client.Write(payload)
		client.(*net.TCPConn).CloseWrite()
	}()
	echoed := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		echoed <- b
	}()
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		_, err = conn.Write(buf[:n])
		require.NoError(t, err)
	}
	require.NoError(t, conn.CloseWrite())
	assert.True(t, bytes.Equal(payload, <-echoed), "the whole payload comes back")

	nodelay := -1
	raw, err := conn.SyscallConn()
	require.NoError(t, err)
	require.NoError(t, raw.Control(func(fd uintptr) {
		nodelay, _ = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY)
	}))
	assert.Equal(t, 1, nodelay, "no Nagle delay, as for connections accepted by package net")
}

func TestConnDeadline(t *testing.T) {
	conn, _, _ := connPair(t)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err := conn.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr)
	assert.True(t, netErr.Timeout())

	require.NoError(t, conn.SetReadDeadline(time.Time{}))
	require.NoError(t, conn.SetWriteDeadline(time.Now().Add(-time.Second)))
	_, err = conn.Write([]byte("x"))
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "a deadline in the past fails at once")
}

// A deadline set by another goroutine ends a Read in progress, also one that
// holds the P (the timer's goroutine starts only when it fires).
func TestConnDeadlineMovedDuringRead(t *testing.T) {
	if !withOneP(t) {
		return
	}
	for _, held := range []bool{false, true} {
		conn, _, waiter := connPair(t)
		time.AfterFunc(20*time.Millisecond, func() { conn.SetReadDeadline(time.Now()) })
		done := make(chan error, 1)
		go func() {
			if held {
				waiter.Pin(runtime.NumGoroutine()) // this goroutine, not yet the timer's
				waiter.streak.Store(true)          // as after a short wait: a new Waiter does not hold
			}
			_, err := conn.Read(make([]byte, 1))
			done <- err
		}()
		select {
		case err := <-done:
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "held: %v", held)
		case <-time.After(10 * time.Second):
			t.Fatalf("held: %v: Read did not see its new deadline", held)
		}
		if held && canHold {
			assert.NotZero(t, waiter.HeldWaits(), "the Read held the P, the only one")
		}
	}
}

func TestConnCloseDuringRead(t *testing.T) {
	conn, _, _ := connPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 1))
		done <- err
	}()
	// Whether Read is already waiting or not, it must end with ErrClosed.
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, conn.Close())
	select {
	case err := <-done:
		assert.ErrorIs(t, err, net.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end Read")
	}
	assert.ErrorIs(t, conn.Close(), net.ErrClosed, "a second Close")
	_, err := conn.Write([]byte("x"))
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.ErrorIs(t, conn.SetDeadline(time.Now()), net.ErrClosed)
}

// While the Waiter holds the P, a goroutine that waits in the netpoller
// for the status socket still gets its data.
func TestWaiterLetsStatusReaderRun(t *testing.T) {
	if !withOneP(t) {
		return
	}
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	statusFD, err := FD(r)
	require.NoError(t, err)

	waiter, err := NewWaiter(statusFD)
	require.NoError(t, err)
	defer waiter.Close()
	go func() {
		b := make([]byte, 1)
		r.Read(b)
		waiter.Wake()
	}()
	idle, _, err := os.Pipe() // never readable
	require.NoError(t, err)
	defer idle.Close()
	waiter.Pin(runtime.NumGoroutine())
	waiter.streak.Store(true) // as after a short wait: a new Waiter does not hold
	seen := waiter.Wakes()
	time.AfterFunc(20*time.Millisecond, func() { w.Write([]byte{1}) })
	got, err := waiter.WaitFD(int(idle.Fd()), unix.POLLIN, time.Now().Add(10*time.Second), seen)
	require.NoError(t, err)
	assert.Equal(t, Woken, got, "the reader ran, and woke the wait")
	if canHold {
		assert.NotZero(t, waiter.HeldWaits(), "while the wait held the P, the only one")
	}
}

// withOneP runs the calling test again in a process of its own with
// GOMAXPROCS=1, where a wait that holds the P leaves no other P to run the
// goroutines the test needs: it reports whether the caller is that run.
// (Setting GOMAXPROCS in this process would change it for parallel tests.)
func withOneP(t *testing.T) bool {
	t.Helper()
	if os.Getenv("SYS_TEST_ONE_P") != "" {
		require.Equal(t, 1, runtime.GOMAXPROCS(0))
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SYS_TEST_ONE_P=1", "GOMAXPROCS=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "with one P:\n%s", out)
	return false
}

// A deadline set while one goroutine waits to read and another to write
// reaches the reader, whichever of the two wakes first.
func TestConnDeadlineWithTwoWaiters(t *testing.T) {
	for range 20 {
		conn, client, _ := connPair(t)
		wrote := make(chan error, 1)
		go func() { // more than the buffers hold: the peer reads nothing
			_, err := conn.Write(make([]byte, 64<<20))
			wrote <- err
		}()
		read := make(chan error, 1)
		go func() {
			_, err := conn.Read(make([]byte, 1))
			read <- err
		}()
		time.Sleep(5 * time.Millisecond) // let both wait; the test holds either way
		require.NoError(t, conn.SetReadDeadline(time.Now()))
		select {
		case err := <-read:
			assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		case <-time.After(10 * time.Second):
			t.Fatal("the reader did not see its deadline")
		}
		require.NoError(t, conn.Close())
		assert.ErrorIs(t, <-wrote, net.ErrClosed, "Close ends the write")
		client.Close()
	}
}

// A Wake between a caller's look at its state and its wait is not lost.
func TestWakeBeforeWaitIsNotLost(t *testing.T) {
	waiter, err := NewWaiter(-1)
	require.NoError(t, err)
	defer waiter.Close()
	idle, _, err := os.Pipe()
	require.NoError(t, err)
	defer idle.Close()
	seen := waiter.Wakes()
	waiter.Wake()
	got, err := waiter.WaitFD(int(idle.Fd()), unix.POLLIN, time.Now().Add(10*time.Second), seen)
	require.NoError(t, err)
	assert.Equal(t, Woken, got)
}

func TestConnFarDeadline(t *testing.T) {
	conn, client, _ := connPair(t)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(math.MaxInt64)))
	_, err := client.Write([]byte("x"))
	require.NoError(t, err)
	n, err := conn.Read(make([]byte, 1))
	assert.NoError(t, err, "a deadline centuries away has not passed")
	assert.Equal(t, 1, n)
}
