package sys

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A reply to a unixgram client whose queue is full waits out its timeout
// asleep: poll calls the socket writable all the same, and a loop on it
// would spin a CPU.
func TestWriteToAFullUnixgramClientSleeps(t *testing.T) {
	dir := t.TempDir()
	f, _, err := Listen("unixgram", filepath.Join(dir, "server"), 16, false)
	require.NoError(t, err)
	defer f.Close()
	server := int(rawFD(t, f))
	client, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK, 0)
	require.NoError(t, err)
	defer unix.Close(client)
	to := &syscall.SockaddrUnix{Name: filepath.Join(dir, "client")}
	require.NoError(t, unix.Bind(client, &unix.SockaddrUnix{Name: to.Name}))
	for i := 0; syscall.Sendto(server, []byte("x"), 0, to) == nil; i++ { // fill its queue
		require.Less(t, i, 1<<20, "the client's queue never filled")
	}

	cpu := func() time.Duration {
		var ru unix.Rusage
		require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &ru))
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, start := cpu(), time.Now()
	err = WriteTo(server, []byte("reply"), to, time.Second)
	used := cpu() - before
	assert.ErrorIs(t, err, unix.EAGAIN)
	assert.GreaterOrEqual(t, time.Since(start), time.Second, "it waited out the timeout")
	assert.Less(t, used, 300*time.Millisecond, "CPU used while it waited")
}
