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

	"github.com/prefork-go/prefork"
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
			inFlight.send("stopping") // answered once the old child's stop begins
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
			assert.Equal(t, "stopping", reply, "the request in flight across the handover finished")
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

// A new master that cannot start its pool fails the upgrade, whether it
// exits (its PostBind fails) or is not ready within StartTimeout and is
// stopped: the old one serves on, on sockets the new one left as they were
// (a Unix socket's file stays; a TCP socket takes connections), and says
// why, to the log and to Manager.Upgrade's caller. Once the cause is gone,
// the same call upgrades.
func TestUpgradeThatFailsServesOn(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ network, how string }{{"tcp", "exits"}, {"unix", "exits"}, {"tcp", "times out"}, {"unix", "times out"}} {
		t.Run(c.network+" "+c.how, func(t *testing.T) {
			t.Parallel()
			flag := filepath.Join(t.TempDir(), "fail")
			cfg := helperConfig{Network: c.network, Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, UpgradeOnHUP: true}
			want := "exited before its pool was ready"
			if c.how == "exits" {
				cfg.FailPostBindWhile = flag
			} else {
				// Long enough for the second attempt's start on a loaded
				// machine: the first hangs until the flag is gone.
				cfg.HangInitWhile, cfg.StartTimeout, cfg.ShutdownTimeout = flag, 5*time.Second, time.Second
				want = "was not ready within StartTimeout"
			}
			if c.network == "unix" {
				cfg.Addr = filepath.Join(t.TempDir(), "s")
			}
			p := startReady(t, cfg)
			old := p.cmd.Process.Pid
			require.NoError(t, os.WriteFile(flag, nil, 0o600))
			p.signal(syscall.SIGHUP) // Manager.Upgrade
			ev := p.waitEvent("master", "Upgraded")
			assert.Contains(t, ev.Detail, "prefork: upgrade failed")
			assert.Contains(t, ev.Detail, want)
			p.waitFor("the new master to be gone", func() bool { return len(p.group()) == 1+len(p.children()) })
			if c.network == "unix" {
				_, err := os.Lstat(cfg.Addr)
				require.NoError(t, err, "the socket's file stays")
			}
			assert.Equal(t, old, parentOf(p.askPID()), "the old pool serves on")

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
		})
	}
}

// A stop that comes while the new master starts abandons the upgrade: the
// new master is stopped, both exit, and Manager.Upgrade's caller hears it.
func TestStopDuringUpgrade(t *testing.T) {
	t.Parallel()
	flag := filepath.Join(t.TempDir(), "hang")
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, UpgradeOnHUP: true, HangInitWhile: flag, ShutdownTimeout: time.Second})
	require.NoError(t, os.WriteFile(flag, nil, 0o600))
	p.signal(syscall.SIGHUP)
	p.waitFor("the new master", func() bool { return strings.Contains(p.logText(), "upgrading: a new master starts") })
	successor := atoi(t, regexp.MustCompile(`upgrading: a new master starts","pid":(\d+)`).FindStringSubmatch(p.logText())[1])
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	assert.Contains(t, p.waitEvent("master", "Upgraded").Detail, "the pool began to stop before the new master")
	require.True(t, gone(t, successor), "the new master is stopped too")
	p.waitFor("the whole group to be gone", func() bool { return len(p.group()) == 0 })
}

// A master that took over can be upgraded in turn: unnamed sockets are
// found by their address as configured each time, and keep their names.
func TestUpgradeTwice(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	sockets := []prefork.Socket{{Addr: "127.0.0.1:0"}, {Network: "unix", Addr: path}}
	p := startPoolNoWait(t, helperConfig{Sockets: sockets, Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1})
	addrs := p.boundSockets("master", 2)
	p.waitEvent("master", "PostInitChildren")
	name := "tcp " + addrs[0]
	master := p.cmd.Process.Pid
	for round := range 2 {
		require.NoError(t, syscall.Kill(master, syscall.SIGUSR2))
		// The first master has exited after the first round: wait on the log.
		successor := 0
		require.Eventually(t, func() bool {
			m := regexp.MustCompile(`upgraded: the new master serves; stopping","pid":(\d+)`).FindAllStringSubmatch(p.logText(), -1)
			if len(m) > round {
				successor = atoi(t, m[round][1])
			}
			return successor != 0 && strings.Count(p.logText(), "took over from the previous master") > round
		}, waitLimit, 10*time.Millisecond, "round %d: the upgrade", round)
		require.True(t, gone(t, master), "round %d: the old master exits", round)
		c := p.dialTo("tcp", addrs[0])
		assert.Equal(t, name, c.ask("socket"), "round %d: the unnamed socket keeps its name", round)
		assert.Equal(t, successor, parentOf(atoi(t, c.ask("pid"))))
		c.conn.Close()
		u := p.dialTo("unix", path)
		assert.Equal(t, "unix "+path, u.ask("socket"))
		u.conn.Close()
		master = successor
	}
	require.NoError(t, syscall.Kill(master, syscall.SIGTERM))
	require.True(t, gone(t, master))
	_, err := os.Lstat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "the last master removes the file it took over")
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

// A deploy that switches a symbolic link to a new release: the upgrade
// runs the file the link names now, not the one the old master runs.
func TestUpgradeFollowsASymlinkSwitch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, release := range []string{"v1", "v2"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, release), 0o755))
		copyFile(t, os.Args[0], filepath.Join(dir, release, "server"))
	}
	current := filepath.Join(dir, "current")
	require.NoError(t, os.Symlink(filepath.Join(dir, "v1"), current))
	p := startPoolWith(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1}, func(env []string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(current, "server"), "-test.run=^$")
		cmd.Env = append(os.Environ(), env...)
		return cmd
	})
	p.addr = p.waitEvent("master", "PostBind").Detail
	p.waitEvent("master", "PostInitChildren")

	require.NoError(t, os.Remove(current))
	require.NoError(t, os.Symlink(filepath.Join(dir, "v2"), current))
	p.signal(syscall.SIGUSR2)
	require.NoError(t, p.wait())
	successor := p.successorPID()
	exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", successor))
	require.NoError(t, err)
	v2, err := os.Stat(filepath.Join(dir, "v2", "server"))
	require.NoError(t, err)
	assert.True(t, os.SameFile(exe, v2), "the new master runs the release the link names now")
	assert.Equal(t, successor, parentOf(p.askPID()))
	require.NoError(t, syscall.Kill(successor, syscall.SIGTERM))
	require.True(t, gone(t, successor))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o755))
}
