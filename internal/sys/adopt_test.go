//go:build unix

package sys

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// connFD is the descriptor of one of the net package's sockets.
func connFD(t *testing.T, c syscall.Conn) int {
	t.Helper()
	raw, err := c.SyscallConn()
	require.NoError(t, err)
	fd := -1
	require.NoError(t, raw.Control(func(d uintptr) { fd = int(d) }))
	return fd
}

// socketOf is a socket made by the net package, as a program makes its own.
type socketOf interface {
	syscall.Conn
	Close() error
}

func openSocket(network, address string) (s socketOf, addr string, err error) {
	if IsPacket(network) {
		pc, err := net.ListenPacket(network, address)
		if err != nil {
			return nil, "", err
		}
		return pc.(socketOf), pc.LocalAddr().String(), nil
	}
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, "", err
	}
	return ln.(socketOf), ln.Addr().String(), nil
}

// A socket of the program's own is adopted with its network and address;
// the master works on a duplicate, and the program's descriptor stays open
// once the duplicate is closed.
func TestAdoptLearnsNetworkAndAddress(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		name, network, address string // what the socket is made with
		want                   string // what Adopt says
	}{
		{"tcp4", "tcp4", "127.0.0.1:0", "tcp4"},
		{"tcp6 (IPV6_V6ONLY)", "tcp6", "[::1]:0", "tcp6"},
		{"tcp (dual-stack)", "tcp", ":0", "tcp"},
		{"udp4", "udp4", "127.0.0.1:0", "udp4"},
		{"udp6", "udp6", "[::1]:0", "udp6"},
		{"unix", "unix", filepath.Join(dir, "stream"), "unix"},
		{"unixgram", "unixgram", filepath.Join(dir, "dgram"), "unixgram"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, want, err := openSocket(c.network, c.address)
			if err != nil && strings.Contains(c.address, "::") {
				t.Skipf("no IPv6 here: %v", err)
			}
			require.NoError(t, err)
			defer s.Close()
			fd := connFD(t, s)
			f, network, addr, err := Adopt(fd)
			require.NoError(t, err)
			defer f.Close()
			if c.want == "tcp" && network == "tcp4" {
				t.Skip("the wildcard address is IPv4 here: no dual-stack socket")
			}
			assert.Equal(t, c.want, network)
			assert.Equal(t, want, addr.String())
			dup := rawFD(t, f)
			assert.NotEqual(t, uintptr(fd), dup, "a duplicate")
			flags, err := unix.FcntlInt(dup, unix.F_GETFD, 0)
			require.NoError(t, err)
			assert.NotZero(t, flags&unix.FD_CLOEXEC, "the duplicate is close-on-exec")
			assert.True(t, nonblocking(t, f))
			require.NoError(t, f.Close())
			_, err = unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
			assert.NoError(t, err, "the program's descriptor is still open")
		})
	}
}

// A blocking socket, as systemd-socket-activate passes, is made
// non-blocking once, and starting a child with it keeps it so.
func TestAdoptBlockingSocket(t *testing.T) {
	t.Parallel()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	require.NoError(t, err)
	defer unix.Close(fd)
	path := filepath.Join(t.TempDir(), "s")
	require.NoError(t, unix.Bind(fd, &unix.SockaddrUnix{Name: path}))
	require.NoError(t, unix.Listen(fd, 8))
	f, network, addr, err := Adopt(fd)
	require.NoError(t, err)
	defer f.Close()
	assert.Equal(t, "unix", network)
	assert.Equal(t, path, addr.String())
	cmd := exec.Command("/bin/sh", "-c", "exit 0")
	cmd.ExtraFiles = []*os.File{f}
	require.NoError(t, cmd.Run())
	assert.True(t, nonblocking(t, f))
	require.NoError(t, CheckListener(int(rawFD(t, f))))
}

func TestAdoptRefusesWhatCannotBeServed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	packet, err := net.Listen("unixpacket", filepath.Join(dir, "packet"))
	require.NoError(t, err)
	defer packet.Close()
	file, err := os.Create(filepath.Join(dir, "file"))
	require.NoError(t, err)
	defer file.Close()
	unbound, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	require.NoError(t, err)
	defer unix.Close(unbound)

	for name, c := range map[string]struct {
		fd   int
		want string
	}{
		"a connection":     {connFD(t, conn.(syscall.Conn)), "does not listen"},
		"a seqpacket":      {connFD(t, packet.(syscall.Conn)), "SOCK_SEQPACKET"},
		"a file":           {connFD(t, file), "not a socket"},
		"an unbound dgram": {unbound, "unbound unixgram socket"},
		"a closed fd":      {1 << 20, "not a socket"},
	} {
		t.Run(name, func(t *testing.T) {
			f, _, _, err := Adopt(c.fd)
			assert.Nil(t, f)
			assert.ErrorContains(t, err, c.want)
		})
	}
}
