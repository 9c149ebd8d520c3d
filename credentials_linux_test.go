package prefork_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireRoot skips a test that needs a master running as root.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: only a master that runs as root can start its children as another user (run the tests as root to run this one)")
	}
}

// account is a user or group of the system, for the tests that change
// users.
type account struct {
	name string // as given to Manager: a name, or the id if it has none
	id   uint32
}

// nobody returns the unprivileged user and group that the tests run
// children as: nobody and its group, or 65534 where they have no entries.
func nobody(t *testing.T) (account, account) {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		return account{"65534", 65534}, account{"65534", 65534}
	}
	uid, gid := atoi(t, u.Uid), atoi(t, u.Gid)
	group := account{strconv.Itoa(gid), uint32(gid)}
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		group.name = g.Name
	}
	return account{u.Username, uint32(uid)}, group
}

// openTempDir returns a temporary directory that every user can reach and
// list, with a file "events" in it that every user can write, for children
// that do not run as root to record their hooks in.
func openTempDir(t *testing.T) (dir, events string) {
	t.Helper()
	dir = t.TempDir()
	for d := dir; strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	events = filepath.Join(dir, "events")
	require.NoError(t, os.WriteFile(events, nil, 0o666))
	require.NoError(t, os.Chmod(events, 0o666)) // whatever the umask
	return dir, events
}

// procStatus reads the fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string][]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	fields := map[string][]string{}
	for line := range strings.Lines(string(data)) {
		name, values, _ := strings.Cut(line, ":")
		fields[name] = strings.Fields(values)
	}
	return fields
}

// requireRunsAs checks that process pid runs as uid and gid, real,
// effective, saved and file-system ids alike, with no supplementary group
// and no capability.
func requireRunsAs(t *testing.T, pid int, uid, gid uint32) {
	t.Helper()
	status := procStatus(t, pid)
	u, g := strconv.Itoa(int(uid)), strconv.Itoa(int(gid))
	assert.Equal(t, []string{u, u, u, u}, status["Uid"], "child %d: real, effective, saved and file-system uid", pid)
	assert.Equal(t, []string{g, g, g, g}, status["Gid"], "child %d: gids", pid)
	assert.Empty(t, status["Groups"], "child %d: supplementary groups", pid)
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapAmb"} {
		assert.Equal(t, []string{"0000000000000000"}, status[set], "child %d: %s", pid, set)
	}
}

// freePrivilegedPort returns a port below 1024 that nothing listens on at
// 127.0.0.1, or 0 if it finds none.
func freePrivilegedPort() int {
	for port := 990; port > 900; port-- {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			ln.Close()
			return port
		}
	}
	return 0
}

// dialAs connects to the pool as uid and gid, without supplementary
// groups, from a process of its own, and returns what it printed: the
// answer to "hello", or "denied".
func dialAs(t *testing.T, p *pool, uid, gid uint32) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	// /proc/self/exe is this binary even where its directory is closed
	// to that user.
	cmd := exec.CommandContext(ctx, "/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envDial+"="+p.network+" "+p.addr)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, _ := cmd.Output()
	return strings.TrimSpace(string(out))
}

// A master that runs as root binds a privileged port and starts its
// children as User and Group: every id of theirs is the user's, they have
// no supplementary group and no capability, they serve, and they cannot
// become root again. (That they still get the parent-death signal is
// tested in internal/sys.)
func TestChildrenRunAsUser(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	u, g := nobody(t)
	_, events := openTempDir(t)
	addr := "127.0.0.1:0"
	if port := freePrivilegedPort(); port != 0 {
		addr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	p := startReady(t, helperConfig{Addr: addr, User: u.name, Group: g.name, Min: 2, Max: 2, Events: events})
	if addr != "127.0.0.1:0" {
		assert.Equal(t, addr, p.addr, "the master binds the privileged port")
	}

	assert.Equal(t, "0", procStatus(t, p.cmd.Process.Pid)["Uid"][1], "the master stays root")
	children := p.children()
	require.Len(t, children, 2)
	for _, pid := range children {
		requireRunsAs(t, pid, u.id, g.id)
	}
	c := p.dial()
	assert.Contains(t, children, atoi(t, c.ask("pid")), "a child serves")
	assert.Equal(t, syscall.EPERM.Error(), c.ask("setuid"), "setuid(0) in a child")
	c.conn.Close()

	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
}

// Children that run as another user serve a Unix socket whose file they
// cannot reach: they inherit the socket, as they inherit their status
// socket and the scoreboard. When the pool stops they still learn that the
// socket takes no more connections, and serve those queued.
func TestChildrenAsUserServeASocketTheyCannotReach(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	u, g := nobody(t)
	_, events := openTempDir(t)
	closed := t.TempDir()
	require.NoError(t, os.Chmod(closed, 0o700))
	p := startReady(t, helperConfig{Network: "unix", Addr: filepath.Join(closed, "s.sock"), User: u.name, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, Events: events})

	assert.Equal(t, "denied", dialAs(t, p, u.id, g.id), "the user cannot reach the file")
	children := p.children()
	require.Len(t, children, 1)
	requireRunsAs(t, children[0], u.id, g.id)
	for range 3 {
		assert.Equal(t, children[0], p.askPID())
	}

	busy, queued := p.queueBehindBusyChild(3)
	p.signal(syscall.SIGTERM)
	reply, err := busy.recv()
	require.NoError(t, err)
	assert.Equal(t, "stopping", reply)
	requireQueuedServed(t, queued)
	require.NoError(t, p.wait())
}

// SocketMode, SocketUser and SocketGroup set the file of a Unix socket:
// a client that runs as its user, or in its group, connects; another is
// refused.
func TestSocketFileModeAndOwner(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	u, g := nobody(t)
	other := account{"1", 1} // daemon on Debian; an id needs no entry
	for name, c := range map[string]struct {
		cfg              helperConfig
		mode             os.FileMode
		uid, gid         uint32
		allowed, refused [2]uint32 // uid, gid
	}{
		"group": {helperConfig{SocketMode: 0o660, SocketGroup: g.name}, 0o660, 0, g.id,
			[2]uint32{u.id, g.id}, [2]uint32{other.id, other.id}},
		"owner": {helperConfig{SocketMode: 0o600, SocketUser: other.name}, 0o600, other.id, 0,
			[2]uint32{other.id, other.id}, [2]uint32{u.id, g.id}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir, _ := openTempDir(t)
			cfg := c.cfg
			cfg.Network, cfg.Addr, cfg.Min, cfg.Max = "unix", filepath.Join(dir, "s.sock"), 1, 1
			p := startReady(t, cfg)

			fi, err := os.Lstat(cfg.Addr)
			require.NoError(t, err)
			assert.Equal(t, os.ModeSocket|c.mode, fi.Mode())
			st := fi.Sys().(*syscall.Stat_t)
			assert.Equal(t, [2]uint32{c.uid, c.gid}, [2]uint32{st.Uid, st.Gid}, "owner and group")
			assert.Equal(t, "hello", dialAs(t, p, c.allowed[0], c.allowed[1]))
			assert.Equal(t, "denied", dialAs(t, p, c.refused[0], c.refused[1]))

			p.signal(syscall.SIGTERM)
			require.NoError(t, p.wait())
		})
	}
}
