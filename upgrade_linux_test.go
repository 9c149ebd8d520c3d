package prefork_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// parentOf returns the parent of process pid, or 0 if it is gone.
func parentOf(pid int) int {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	fields := bytes.Fields(stat[bytes.LastIndexByte(stat, ')')+1:])
	ppid, _ := strconv.Atoi(string(fields[1]))
	return ppid
}

// successorPID reads the new master's pid from the old master's log.
func (p *pool) successorPID() int {
	p.t.Helper()
	m := regexp.MustCompile(`"prefork: upgraded: the new master serves; stopping","pid":(\d+)`).FindStringSubmatch(p.logText())
	require.NotNil(p.t, m, "the old master logs the new master's pid")
	return atoi(p.t, m[1])
}

// gone waits until process pid has exited (and been reaped, or left as a
// zombie), for at most waitLimit.
func gone(t *testing.T, pid int) bool {
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || parentOf(pid) == 0 {
			return true
		}
		if stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); bytes.Contains(stat, []byte(") Z ")) {
			return true
		}
	}
	return false
}

// SIGUSR2 starts the program as a new master on the same sockets; once its
// pool is ready the old master stops gracefully. A request in flight on an
// old child finishes, every connection made meanwhile is served, and
// afterwards the new master's children serve. A Unix socket's file stays
// through the upgrade and is the new master's to remove.
func TestUpgrade(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			cfg := helperConfig{Network: network, Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2}
			if network == "unix" {
				cfg.Addr = filepath.Join(t.TempDir(), "s")
			}
			p := startReady(t, cfg)
			old := p.cmd.Process.Pid
			inFlight := p.dial()
			inFlight.send("sleep 1s")
			p.waitEvent("child", "ProcessRequest")

			// Clients all through the upgrade: a connection each, bounded.
			stop := make(chan struct{})
			var (
				wg             sync.WaitGroup
				served, failed int
				firstErr       error
			)
			wg.Go(func() {
				for i := 0; i < 400; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if reply, err := dialOnce(network, p.addr); err == nil && reply == "x\n" {
						served++
					} else if failed++; firstErr == nil {
						firstErr = fmt.Errorf("%q, %v", reply, err)
					}
					time.Sleep(5 * time.Millisecond)
				}
			})

			p.signal(syscall.SIGUSR2)
			require.NoError(t, p.wait(), "the old master exits normally")
			reply, err := inFlight.recv()
			require.NoError(t, err)
			assert.Equal(t, "slept", reply, "the request in flight finished")
			close(stop)
			wg.Wait()
			t.Logf("%d connections served during the upgrade", served)
			assert.Zero(t, failed, "no connection failed during the upgrade (first error: %v)", firstErr)
			assert.Positive(t, served)

			successor := p.successorPID()
			assert.NotEqual(t, old, successor)
			assert.Equal(t, successor, parentOf(p.askPID()), "the new master's children serve")
			if network == "unix" {
				_, err := os.Lstat(cfg.Addr)
				require.NoError(t, err, "the socket's file stays through the upgrade")
			}

			require.NoError(t, syscall.Kill(successor, syscall.SIGTERM))
			require.True(t, gone(t, successor), "the new master stops on SIGTERM")
			if network == "unix" {
				_, err := os.Lstat(cfg.Addr)
				assert.ErrorIs(t, err, os.ErrNotExist, "and removes the file of the socket it took over")
			}
		})
	}
}

// dialOnce connects, asks one line and returns the answer.
func dialOnce(network, addr string) (string, error) {
	c, err := net.DialTimeout(network, addr, waitLimit)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := fmt.Fprintln(c, "x"); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// A new master that cannot start its pool fails the upgrade: the old one
// serves on, and says why, to the log and to Manager.Upgrade's caller.
func TestUpgradeThatFailsServesOn(t *testing.T) {
	t.Parallel()
	flag := filepath.Join(t.TempDir(), "fail")
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, FailPostBindWhile: flag, UpgradeOnHUP: true})
	old := p.cmd.Process.Pid
	require.NoError(t, os.WriteFile(flag, nil, 0o600))
	p.signal(syscall.SIGHUP) // Manager.Upgrade
	ev := p.waitEvent("master", "Upgraded")
	assert.Contains(t, ev.Detail, "prefork: upgrade failed")
	assert.Contains(t, ev.Detail, "exited before its pool was ready")
	assert.Contains(t, p.logText(), "PostBind refused by the test", "the new master said why")
	assert.Equal(t, old, parentOf(p.askPID()), "the old pool serves on")

	// Once the cause is gone, the same call upgrades.
	require.NoError(t, os.Remove(flag))
	p.signal(syscall.SIGHUP)
	require.NoError(t, p.wait())
	var results []string
	for _, e := range p.readEvents() {
		if e.Hook == "Upgraded" {
			results = append(results, e.Detail)
		}
	}
	require.Len(t, results, 2)
	assert.Equal(t, "<nil>", results[1])
	successor := p.successorPID()
	assert.Equal(t, successor, parentOf(p.askPID()))
	require.NoError(t, syscall.Kill(successor, syscall.SIGTERM))
	require.True(t, gone(t, successor))
}

// Under a service manager, the old master tells it the new master's pid
// (MAINPID=) once the new pool is ready, and the new master tells it its
// own state from then on, watchdog included.
func TestUpgradeUnderServiceManager(t *testing.T) {
	t.Parallel()
	n, socket := listenNotifications(t)
	p := startPoolWith(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1}, func(env []string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), append(env, "NOTIFY_SOCKET="+socket, "WATCHDOG_USEC=200000")...)
		return cmd
	})
	n.next("READY=1")
	p.signal(syscall.SIGUSR2)
	msg := n.next(fmt.Sprintf("MAINPID=%d", waitSuccessor(t, p)))
	assert.NotContains(t, msg, "READY=1")
	require.NoError(t, p.wait())
	successor := p.successorPID()
	n.drain() // the old master has exited: what comes now is the new one's
	for _, msg := range n.seen {
		assert.NotContains(t, strings.Split(msg, "\n"), "STOPPING=1", "the old master's stop is not the service's")
	}
	n.next("WATCHDOG=1")
	n.next("WATCHDOG=1")
	require.NoError(t, syscall.Kill(successor, syscall.SIGTERM))
	n.next("STOPPING=1")
	require.True(t, gone(t, successor))
}

// waitSuccessor waits until the old master has logged the new master's pid.
func waitSuccessor(t *testing.T, p *pool) int {
	t.Helper()
	p.waitFor("the upgrade", func() bool { return strings.Contains(p.logText(), "upgraded: the new master serves") })
	return p.successorPID()
}
