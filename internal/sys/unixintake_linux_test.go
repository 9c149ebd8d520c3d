package sys

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A Unix listener's intake is closed for its children even when they
// cannot tell from its file: here a new server's socket is at the path by
// the time they look (as for a child that may not search the directory,
// they cannot see the file gone). The filter that says so keeps what
// comes: a connection queued before, a datagram from a client that has
// the socket.
func TestUnixIntakeClosedWithoutTheFile(t *testing.T) {
	for _, network := range []string{"unix", "unixgram"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s")
			f, _, err := Listen(network, path, 4, false)
			require.NoError(t, err)
			defer f.Close()
			fd := int(rawFD(t, f))
			assert.False(t, IntakeClosed(fd))
			client, err := net.Dial(network, path)
			require.NoError(t, err)
			defer client.Close()

			require.NoError(t, CloseIntake(fd, network))
			next, _, err := Listen(network, path, 4, false)
			require.NoError(t, err, "a new server binds the path")
			defer next.Close()
			assert.True(t, IntakeClosed(fd), "the old socket's intake is closed")
			assert.False(t, IntakeClosed(int(rawFD(t, next))), "the new one's is open")

			if network == "unix" {
				conn, _, err := unix.Accept(fd)
				require.NoError(t, err, "the queued connection is still there")
				unix.Close(conn)
				return
			}
			_, err = client.Write([]byte("after"))
			require.NoError(t, err)
			buf := make([]byte, 16)
			n, _, err := unix.Recvfrom(fd, buf, 0)
			require.NoError(t, err, "a datagram sent after is kept")
			assert.Equal(t, "after", string(buf[:n]))
		})
	}
}
