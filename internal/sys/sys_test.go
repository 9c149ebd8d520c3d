//go:build unix

package sys

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func nonblocking(t *testing.T, f *os.File) bool {
	t.Helper()
	// SyscallConn does not touch the mode, unlike Fd.
	raw, err := f.SyscallConn()
	require.NoError(t, err)
	var flags int
	require.NoError(t, raw.Control(func(fd uintptr) {
		flags, err = unix.FcntlInt(fd, unix.F_GETFL, 0)
	}))
	require.NoError(t, err)
	return flags&unix.O_NONBLOCK != 0
}

func TestListenBindsNonBlockingSocket(t *testing.T) {
	f, addr, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	defer f.Close()
	tcp := addr.(*net.TCPAddr)
	assert.True(t, tcp.IP.Equal(net.IPv4(127, 0, 0, 1)))
	assert.NotZero(t, tcp.Port, "port 0 is resolved to the bound port")
	assert.True(t, nonblocking(t, f))
	require.NoError(t, CheckListener(int(rawFD(t, f))))
}

func rawFD(t *testing.T, f *os.File) uintptr {
	fd, err := FD(f)
	require.NoError(t, err)
	return uintptr(fd)
}

// The invariant the whole design rests on: handing the listener to a child
// through os/exec does not switch the shared socket to blocking mode.
func TestStartingAProcessKeepsListenerNonBlocking(t *testing.T) {
	f, _, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	defer f.Close()
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	cmd.ExtraFiles = []*os.File{f}
	require.NoError(t, cmd.Run())
	assert.True(t, nonblocking(t, f))
}

func TestListenErrors(t *testing.T) {
	_, _, err := Listen("tcp4", "[::1]:0", 16, false)
	assert.Error(t, err, "an IPv6 address for tcp4")
	_, _, err = Listen("tcp", "192.0.2.1:1", 16, false) // TEST-NET-1: not a local address
	assert.True(t, errors.Is(err, unix.EADDRNOTAVAIL), "got %v", err)
	a, addr, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	defer a.Close()
	_, _, err = Listen("tcp", addr.String(), 16, false)
	assert.True(t, errors.Is(err, unix.EADDRINUSE), "got %v", err)
}

func TestListenIPv6(t *testing.T) {
	f, addr, err := Listen("tcp6", "[::1]:0", 16, false)
	if errors.Is(err, unix.EADDRNOTAVAIL) {
		t.Skip("no ::1")
	}
	require.NoError(t, err)
	defer f.Close()
	assert.True(t, addr.(*net.TCPAddr).IP.Equal(net.IPv6loopback))
}

// waitPoller runs p.Wait, for at most 10 seconds, and returns whether a
// listener is ready.
func waitPoller(t *testing.T, p *Poller) bool {
	t.Helper()
	got := make(chan bool, 1)
	go func() {
		l, err := p.Wait()
		assert.NoError(t, err)
		got <- l
	}()
	select {
	case l := <-got:
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return")
		return false
	}
}

func TestPollerAndAccept(t *testing.T) {
	f, addr, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	defer f.Close()
	fd := int(rawFD(t, f))

	waiter, err := NewWaiter(-1)
	require.NoError(t, err)
	defer waiter.Close()
	_, err = Accept(fd, "tcp", waiter)
	assert.True(t, errors.Is(err, syscall.EAGAIN), "nothing to accept: %v", err)

	p, err := NewPoller([]int{fd}, waiter)
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Listen(true)
	require.NoError(t, err)

	wait := func() bool { return waitPoller(t, p) }

	client, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	defer client.Close()
	assert.True(t, wait(), "a connection makes the listener ready")
	conn, err := Accept(fd, "tcp", waiter)
	require.NoError(t, err)
	defer conn.Close()
	_, err = client.Write([]byte("hi"))
	require.NoError(t, err)
	buf := make([]byte, 2)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = conn.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "hi", string(buf))
	assert.Equal(t, client.LocalAddr().String(), conn.RemoteAddr().String())
	assert.Equal(t, addr.String(), conn.LocalAddr().String())

	waiter.Wake()
	assert.False(t, wait(), "the wake-up ends Wait without the listener")
}

// A Poller over a stream and a datagram listener wakes for either, and
// takes both out of its watch together.
func TestPollerSeveralListeners(t *testing.T) {
	stream, saddr, err := Listen("tcp", "127.0.0.1:0", 16, false)
	require.NoError(t, err)
	defer stream.Close()
	packet, paddr, err := Listen("udp", "127.0.0.1:0", 0, false)
	require.NoError(t, err)
	defer packet.Close()
	waiter, err := NewWaiter(-1)
	require.NoError(t, err)
	defer waiter.Close()
	p, err := NewPoller([]int{int(rawFD(t, stream)), int(rawFD(t, packet))}, waiter)
	require.NoError(t, err)
	defer p.Close()
	_, err = p.Listen(true)
	require.NoError(t, err)
	wait := func() bool { return waitPoller(t, p) }

	d, err := net.Dial("udp", paddr.String())
	require.NoError(t, err)
	defer d.Close()
	_, err = d.Write([]byte("x"))
	require.NoError(t, err)
	assert.True(t, wait(), "a datagram makes the second listener ready")
	buf := make([]byte, 8)
	n, _, _, err := ReadFrom(int(rawFD(t, packet)), buf)
	require.NoError(t, err)
	assert.Equal(t, "x", string(buf[:n]))

	changed, err := p.Listen(false)
	require.NoError(t, err)
	assert.True(t, changed)
	c, err := net.Dial("tcp", saddr.String())
	require.NoError(t, err)
	defer c.Close()
	_, err = d.Write([]byte("y"))
	require.NoError(t, err)
	go func() { time.Sleep(100 * time.Millisecond); waiter.Wake() }()
	assert.False(t, wait(), "out of the watch, neither listener wakes it")

	_, err = p.Listen(true)
	require.NoError(t, err)
	assert.True(t, wait(), "back in the watch, what is queued wakes it")
}

func TestSocketpairModes(t *testing.T) {
	master, child, err := Socketpair()
	require.NoError(t, err)
	defer master.Close()
	defer child.Close()
	assert.True(t, nonblocking(t, master))
	assert.False(t, nonblocking(t, child), "the child's end stays blocking until the child takes it")
	_, err = child.Write([]byte{1, 2, 3})
	require.NoError(t, err)
	buf := make([]byte, 3)
	master.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = master.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, []byte{1, 2, 3}, buf)
}

func TestIsTemporary(t *testing.T) {
	assert.True(t, IsTemporary(unix.ECONNABORTED))
	assert.True(t, IsTemporary(os.NewSyscallError("accept", unix.EHOSTUNREACH)), "a new connection's network error")
	assert.False(t, IsTemporary(os.NewSyscallError("accept", unix.EMFILE)))
	assert.False(t, IsTemporary(unix.EBADF))
	assert.True(t, IsShortOfResources(os.NewSyscallError("accept", unix.EMFILE)))
	assert.True(t, IsShortOfResources(unix.ENOBUFS))
	assert.False(t, IsShortOfResources(unix.ECONNABORTED))
}
