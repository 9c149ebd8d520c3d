package prefork_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// boundSockets waits until one process of role (the master, or a child in
// reuse-port mode) has run PostBind for each of n sockets, and returns
// their addresses in the order of Manager.Sockets.
func (p *pool) boundSockets(role string, n int) []string {
	p.t.Helper()
	var addrs []string
	p.waitFor(fmt.Sprintf("%d PostBind events", n), func() bool {
		byPID := map[int][]string{}
		for _, ev := range p.readEvents() {
			if ev.Role == role && ev.Hook == "PostBind" {
				if byPID[ev.PID] = append(byPID[ev.PID], ev.Detail); len(byPID[ev.PID]) == n {
					addrs = byPID[ev.PID]
					return true
				}
			}
		}
		return false
	})
	return addrs
}

// dialTo connects to another of the pool's sockets than p.network and
// p.addr.
func (p *pool) dialTo(network, addr string) *client {
	p.t.Helper()
	return dialClient(p.t, network, addr)
}

// askDatagram sends line to a UDP socket of the pool and returns the answer.
func askDatagram(t *testing.T, addr, line string) string {
	t.Helper()
	conn, err := net.Dial("udp", addr)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLimit))
	_, err = conn.Write([]byte(line))
	require.NoError(t, err)
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	return string(buf[:n])
}

// hasIPv6Loopback reports whether ::1 can be bound here.
func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// One child serves every socket of the pool: IPv4, IPv6, a Unix socket and
// UDP, and each request says which socket it came from, by the name given
// or, unnamed, by its network and address. PostBind runs for each socket,
// and the stop removes the Unix socket's file.
func TestSeveralSockets(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	sockets := []prefork.Socket{
		{Name: "v4", Network: "tcp4", Addr: "127.0.0.1:0"},
		{Name: "local", Network: "unix", Addr: path},
		{Name: "dns", Network: "udp", Addr: "127.0.0.1:0"},
	}
	if hasIPv6Loopback() {
		sockets = append(sockets, prefork.Socket{Network: "tcp6", Addr: "[::1]:0"})
	}
	p := startPoolNoWait(t, helperConfig{Sockets: sockets, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	addrs := p.boundSockets("master", len(sockets))
	p.waitEvent("master", "PostInitChildren")
	assert.Equal(t, path, addrs[1])

	pids := map[string]bool{}
	for i, s := range sockets {
		if s.Network == "udp" {
			assert.Equal(t, "dns", askDatagram(t, addrs[i], "socket"))
			pids[askDatagram(t, addrs[i], "pid")] = true
			continue
		}
		c := p.dialTo(s.Network, addrs[i])
		want := s.Name
		if want == "" {
			want = s.Network + " " + addrs[i]
		}
		assert.Equal(t, want, c.ask("socket"), "socket %d", i)
		pids[c.ask("pid")] = true
		c.conn.Close()
	}
	assert.Len(t, pids, 1, "the one child serves them all")

	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	_, err := os.Lstat(path)
	assert.ErrorIs(t, err, os.ErrNotExist, "the Unix socket's file is removed")
}

// A child takes its requests from the sockets in turn: a connection on a
// second socket is served next, ahead of those that queued on the first.
func TestSocketsTakenInTurn(t *testing.T) {
	t.Parallel()
	sockets := []prefork.Socket{{Name: "busy", Addr: "127.0.0.1:0"}, {Name: "quiet", Addr: "127.0.0.1:0"}}
	p := startPoolNoWait(t, helperConfig{Sockets: sockets, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	addrs := p.boundSockets("master", 2)
	p.waitEvent("master", "PostInitChildren")

	first := p.dialTo("tcp", addrs[0])
	first.send("sleep 1s")
	p.waitEvent("child", "ProcessRequest")
	var queued []*client
	for i := range 5 {
		c := p.dialTo("tcp", addrs[0])
		c.send(fmt.Sprint("queued ", i))
		queued = append(queued, c)
	}
	quiet := p.dialTo("tcp", addrs[1])
	quiet.send("nth")
	reply, err := first.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply)
	first.conn.Close()
	nth, err := quiet.recv()
	require.NoError(t, err)
	assert.Equal(t, "1", nth, "the quiet socket's connection is the child's second request")
	quiet.conn.Close()
	for i, c := range queued {
		reply, err := c.recv()
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint("queued ", i), reply)
		c.conn.Close()
	}
}

// A graceful stop serves what waits on each socket: the connections queued
// behind the only child's request, on both sockets.
func TestSeveralSocketsStop(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	sockets := []prefork.Socket{{Addr: "127.0.0.1:0"}, {Network: "unix", Addr: path}}
	p := startPoolNoWait(t, helperConfig{Sockets: sockets, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	addrs := p.boundSockets("master", 2)
	p.waitEvent("master", "PostInitChildren")

	busy := p.dialTo("tcp", addrs[0])
	busy.send("stopping")
	p.waitEvent("child", "ProcessRequest")
	onTCP := p.dialTo("tcp", addrs[0])
	onTCP.send("queued tcp")
	onUnix := p.dialTo("unix", path)
	onUnix.send("queued unix")
	p.signal(syscall.SIGTERM)
	for _, c := range []struct {
		c    *client
		want string
	}{{busy, "stopping"}, {onTCP, "queued tcp"}, {onUnix, "queued unix"}} {
		reply, err := c.c.recv()
		require.NoError(t, err)
		assert.Equal(t, c.want, reply)
		c.c.conn.Close()
	}
	require.NoError(t, p.wait())
}

// In reuse-port mode each child binds every socket of its own, and serves
// them all.
func TestSeveralSocketsReusePort(t *testing.T) {
	t.Parallel()
	sockets := []prefork.Socket{{Name: "stream", Addr: "127.0.0.1:0"}, {Name: "datagrams", Network: "udp", Addr: "127.0.0.1:0"}}
	p := startPoolNoWait(t, helperConfig{Sockets: sockets, ReusePort: true, Min: 2, Max: 2, MinSpare: 1, MaxSpare: 2})
	addrs := p.boundSockets("child", 2)
	p.waitEvent("master", "PostInitChildren")
	c := p.dialTo("tcp", addrs[0])
	assert.Equal(t, "stream", c.ask("socket"))
	c.conn.Close()
	assert.Equal(t, "datagrams", askDatagram(t, addrs[1], "socket"))
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
}
