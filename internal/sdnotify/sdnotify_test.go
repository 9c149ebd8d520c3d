//go:build unix

package sdnotify

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// receiver is a service manager's end: a Unix datagram socket at name.
func receiver(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// receive reads one datagram, waiting at most a few seconds.
func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

func TestSendToSocketFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "notify")
	conn := receiver(t, path)
	s, err := New(path)
	require.NoError(t, err)
	assert.Equal(t, path, s.String())
	require.NoError(t, s.Send("READY=1\n"+Status("5 children\nready")))
	assert.Equal(t, "READY=1\nSTATUS=5 children ready", receive(t, conn), "one datagram; no newline within STATUS")
	require.NoError(t, s.Send("WATCHDOG=1"))
	assert.Equal(t, "WATCHDOG=1", receive(t, conn))
}

// A service manager that restarts makes its socket anew: each send finds
// the socket now at the name.
func TestSendFindsASocketMadeAgain(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "notify")
	s, err := New(path)
	require.NoError(t, err)
	assert.Error(t, s.Send("READY=1"), "nothing listens yet")
	conn := receiver(t, path)
	require.NoError(t, s.Send("READY=1"))
	assert.Equal(t, "READY=1", receive(t, conn))
}

func TestReloading(t *testing.T) {
	t.Parallel()
	lines := strings.Split(Reloading(), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, "RELOADING=1", lines[0])
	usec, ok := strings.CutPrefix(lines[1], "MONOTONIC_USEC=")
	require.True(t, ok, lines[1])
	n, err := strconv.ParseUint(usec, 10, 64)
	require.NoError(t, err)
	assert.NotZero(t, n)
}

func TestNewRefusesWhatNamesNoSocket(t *testing.T) {
	t.Parallel()
	s, err := New("")
	assert.NoError(t, err)
	assert.Nil(t, s, "no NOTIFY_SOCKET: nothing to notify")
	for _, bad := range []string{"relative/path", "vsock:2:1234", "@"} {
		_, err := New(bad)
		assert.ErrorContains(t, err, EnvSocket, bad)
	}
}

func TestWatchdogInterval(t *testing.T) {
	t.Parallel()
	const self = 4242
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
		err       bool
	}{
		{"", "", 0, false},
		{"", "4242", 0, false},
		{"200000", "", 100 * time.Millisecond, false},
		{"200000", "4242", 100 * time.Millisecond, false},
		{"200000", "1", 0, false}, // another process's watchdog
		{"30000000", "", 15 * time.Second, false},
		{"0", "", 0, true},
		{"-5", "", 0, true},
		{"soon", "", 0, true},
		{"200000", "me", 0, true},
		{"99999999999999999999", "", 0, true},
	} {
		got, err := WatchdogInterval(c.usec, c.pid, self)
		assert.Equal(t, c.want, got, "%+v", c)
		assert.Equal(t, c.err, err != nil, "%+v: %v", c, err)
	}
}
