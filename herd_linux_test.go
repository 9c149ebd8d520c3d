package prefork_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// With eight idle children, each connection should wake one child, on one
// socket or on several. A child that wakes and finds no connection counts
// a spurious wake-up and logs the count when it exits; with Go's netpoller
// on the shared socket every idle child would wake for every connection,
// about seven spurious wake-ups per connection here.
func TestOneChildWakesPerConnection(t *testing.T) {
	t.Parallel()
	const connections = 40
	for _, sockets := range []int{1, 2} {
		t.Run(fmt.Sprint(sockets, " sockets"), func(t *testing.T) {
			t.Parallel()
			cfg := helperConfig{Min: 8, Max: 8, MinSpare: 1, MaxSpare: 8}
			for range sockets {
				cfg.Sockets = append(cfg.Sockets, prefork.Socket{Addr: "127.0.0.1:0"})
			}
			p := startPoolNoWait(t, cfg)
			addrs := p.boundSockets("master", sockets)
			p.waitEvent("master", "PostInitChildren")
			for i := range connections {
				c := p.dialTo("tcp", addrs[i%sockets])
				assert.Equal(t, "x", c.ask("x"))
				c.conn.Close()
			}
			p.signal(syscall.SIGTERM)
			require.NoError(t, p.wait())

			exits := p.childExits(t)
			spurious := 0
			for _, e := range exits {
				spurious += e.Spurious
			}
			require.Len(t, exits, 8)
			t.Logf("%d spurious wake-ups for %d connections across 8 idle children", spurious, connections)
			assert.LessOrEqual(t, spurious, connections/4)
		})
	}
}

// Because the kernel wakes one child per connection, a child that dies
// after it was woken, before it accepts, leaves the connection to nobody:
// the other idle children's waits never see it. Here the child woken cannot
// accept (it has no descriptors left) and leaves; the master asks its idle
// siblings to look, and one of them takes the connection, instead of the
// replacement, which here hangs in Initialize.
func TestStrandedConnectionGoesToAnIdleSibling(t *testing.T) {
	t.Parallel()
	slow := filepath.Join(t.TempDir(), "slow")
	p := startReady(t, helperConfig{Min: 3, Max: 3, MinSpare: 1, MaxSpare: 3, FewFDs: true, Quiet: true, HangInitWhile: slow})
	require.NoError(t, os.WriteFile(slow, nil, 0o600)) // from now on, a replacement does not come
	leaker := p.dial()
	leakerPID := atoi(t, leaker.ask("pid"))
	assert.Equal(t, "leaked", leaker.ask("leak"))
	leaker.conn.Close()

	// The kernel wakes the child that has watched the listener longest
	// among those that wait: the leaker, which took the last connection,
	// once it waits again.
	p.waitFor("the leaker to wait for a connection", func() bool { return waitsOnListener(leakerPID) })
	start := time.Now()
	pid := atoi(t, p.askNew("pid", 5*time.Second))
	t.Logf("served after %v", time.Since(start).Round(time.Millisecond))
	assert.NotEqual(t, leakerPID, pid)
	assert.Contains(t, p.logText(), "cannot take requests", "the leaker was woken for it, and left")
}

// waitsOnListener reports whether a thread of child pid sleeps in
// epoll_wait on the epoll instance that watches its first listener
// (descriptor 5), as opposed to the Go runtime's own.
func waitsOnListener(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	fds, _ := os.ReadDir(dir + "/fd")
	epfd := -1
	for _, fd := range fds {
		if target, _ := os.Readlink(dir + "/fd/" + fd.Name()); target != "anon_inode:[eventpoll]" {
			continue
		}
		info, _ := os.ReadFile(dir + "/fdinfo/" + fd.Name())
		for _, line := range strings.Split(string(info), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "tfd:" && f[1] == "5" {
				epfd, _ = strconv.Atoi(fd.Name())
			}
		}
	}
	if epfd < 0 {
		return false
	}
	tasks, _ := os.ReadDir(dir + "/task")
	for _, task := range tasks {
		call, _ := os.ReadFile(dir + "/task/" + task.Name() + "/syscall")
		f := strings.Fields(string(call))
		if len(f) < 2 {
			continue
		}
		// The system call's number, then its arguments: epoll_wait's, or
		// epoll_pwait's, first is the instance.
		if arg, err := strconv.ParseInt(strings.TrimPrefix(f[1], "0x"), 16, 64); err == nil && f[0] != "-1" && int(arg) == epfd {
			return true
		}
	}
	return false
}
