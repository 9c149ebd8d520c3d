package sys

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// After CloseIntake a listener takes no new connection, but the ones it
// had queued can still be accepted and served.
func TestCloseIntake(t *testing.T) {
	for _, address := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(address, func(t *testing.T) { testCloseIntake(t, address) })
	}
}

func testCloseIntake(t *testing.T, address string) {
	f, addr, err := Listen("tcp", address, 16, false)
	if err != nil && address[0] == '[' {
		t.Skip("no IPv6 loopback:", err)
	}
	require.NoError(t, err)
	defer f.Close()
	fd := int(rawFD(t, f))
	queued, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	defer queued.Close()
	_, err = queued.Write([]byte("queued\n"))
	require.NoError(t, err)

	assert.False(t, IntakeClosed(fd))
	require.NoError(t, CloseIntake(fd, "tcp"))
	assert.True(t, IntakeClosed(fd))
	late, err := net.DialTimeout("tcp", addr.String(), 300*time.Millisecond)
	if err == nil {
		late.Close()
	}
	assert.Error(t, err, "a new connection is not taken")

	waiter, err := NewWaiter(-1)
	require.NoError(t, err)
	defer waiter.Close()
	conn, err := Accept(fd, "tcp", waiter)
	require.NoError(t, err, "the queued connection is still there")
	defer conn.Close()
	buf := make([]byte, 7)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "queued\n", string(buf), "and its data flows")
	_, err = conn.Write(buf)
	require.NoError(t, err)
	reply := make([]byte, 7)
	require.NoError(t, queued.SetReadDeadline(time.Now().Add(10*time.Second)))
	_, err = io.ReadFull(queued, reply)
	require.NoError(t, err)
	assert.Equal(t, "queued\n", string(reply), "both ways")
	_, err = Accept(fd, "tcp", waiter)
	assert.ErrorIs(t, err, unix.EAGAIN, "nothing else was queued")
}

func TestCloseIntakeDatagrams(t *testing.T) {
	f, addr, err := Listen("udp", "127.0.0.1:0", 0, false)
	require.NoError(t, err)
	defer f.Close()
	fd := int(rawFD(t, f))
	client, err := net.Dial("udp", addr.String())
	require.NoError(t, err)
	defer client.Close()
	_, err = client.Write([]byte("before"))
	require.NoError(t, err)
	require.NoError(t, CloseIntake(fd, "udp"))
	_, err = client.Write([]byte("after"))
	require.NoError(t, err)

	buf := make([]byte, 16)
	_, err = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 10_000)
	require.NoError(t, err)
	n, _, _, err := ReadFrom(fd, buf)
	require.NoError(t, err)
	assert.Equal(t, "before", string(buf[:n]), "what was queued is still there")
	_, _, _, err = ReadFrom(fd, buf)
	assert.ErrorIs(t, err, unix.EAGAIN, "what came after was dropped")
}

// A live Unix server whose queue is full is not taken for a stale socket
// file, and looking does not wait for it to accept.
func TestRemoveStaleDoesNotWaitForAFullQueue(t *testing.T) {
	path := t.TempDir() + "/s"
	f, _, err := Listen("unix", path, 1, false)
	require.NoError(t, err)
	defer f.Close()
	for range 8 { // fill the queue: connect until the kernel says it is full
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		require.NoError(t, err)
		defer unix.Close(fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			break
		}
	}
	done := make(chan bool, 1)
	go func() { done <- removeStale(path, unix.SOCK_STREAM) }()
	select {
	case removed := <-done:
		assert.False(t, removed, "a server is there")
	case <-time.After(5 * time.Second):
		t.Fatal("removeStale waits for a server whose queue is full")
	}
}
