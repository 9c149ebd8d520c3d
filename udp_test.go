package prefork_test

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// datagramClient is one client socket of a packet network.
type datagramClient struct {
	t    *testing.T
	conn net.PacketConn
	to   net.Addr
	buf  []byte
}

func (p *pool) datagramClient() *datagramClient {
	p.t.Helper()
	var conn net.PacketConn
	var to net.Addr
	var err error
	switch p.network {
	case "unixgram": // the client binds too, or it cannot be answered
		conn, err = net.ListenPacket("unixgram", filepath.Join(p.t.TempDir(), "client"))
		to = &net.UnixAddr{Name: p.addr, Net: "unixgram"}
	default:
		conn, err = net.ListenPacket(p.network, "127.0.0.1:0")
		if err == nil {
			to, err = net.ResolveUDPAddr(p.network, p.addr)
		}
	}
	require.NoError(p.t, err)
	p.t.Cleanup(func() { conn.Close() })
	return &datagramClient{t: p.t, conn: conn, to: to, buf: make([]byte, 70000)}
}

func (c *datagramClient) port() int { return c.conn.LocalAddr().(*net.UDPAddr).Port }

func (c *datagramClient) send(b []byte) {
	c.t.Helper()
	_, err := c.conn.WriteTo(b, c.to)
	require.NoError(c.t, err)
}

// recv waits for one answer; loopback does not drop datagrams at these
// rates, so a missing answer is a failure, not bad luck.
func (c *datagramClient) recv(wait time.Duration) (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(wait))
	n, _, err := c.conn.ReadFrom(c.buf)
	return string(c.buf[:n]), err
}

func (c *datagramClient) ask(msg string) string {
	c.t.Helper()
	c.send([]byte(msg))
	reply, err := c.recv(waitLimit)
	require.NoError(c.t, err, "answer to %q", msg)
	return reply
}

func TestUDPEchoManyConcurrentSenders(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Network: "udp", Min: 2, Max: 6, MinSpare: 1, MaxSpare: 3})
	const senders, each = 8, 25
	var wg sync.WaitGroup
	for i := range senders {
		c := p.datagramClient()
		wg.Go(func() {
			for j := range each {
				msg := fmt.Sprintf("sender %d datagram %d", i, j)
				c.send([]byte(msg))
				reply, err := c.recv(waitLimit)
				if !assert.NoError(t, err) || !assert.Equal(t, msg, reply) {
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestUDPLargeDatagramArrivesWhole(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Network: "udp", Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1})
	c := p.datagramClient()
	msg := append([]byte("size "), bytes.Repeat([]byte("0123456789"), 5999)...) // 59995 bytes
	assert.Equal(t, fmt.Sprintf("%d %08x", len(msg), crc32.ChecksumIEEE(msg)), c.ask(string(msg)))
}

func TestUDPAllowDenyRefusesDatagramsFromDeniedAddresses(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Network: "udp", Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, DenyEvenPorts: true})
	var allowed, denied *datagramClient
	for allowed == nil || denied == nil {
		c := p.datagramClient()
		if c.port()%2 == 0 {
			denied = c
		} else {
			allowed = c
		}
	}
	for i := range 3 {
		msg := "hello " + strconv.Itoa(i)
		assert.Equal(t, msg, allowed.ask(msg))
		assert.Equal(t, "denied\n", denied.ask(msg), "RequestDenied answers instead of ProcessRequest")
	}
}

func TestUDPMaxRequestsCountsDatagrams(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Network: "udp", Min: 1, Max: 3, MinSpare: 1, MaxSpare: 2, MaxRequests: 3})
	c := p.datagramClient()
	served := map[int]int{}
	for range 12 {
		pid, err := strconv.Atoi(c.ask("pid"))
		require.NoError(t, err)
		served[pid]++
	}
	for pid, n := range served {
		assert.LessOrEqual(t, n, 3, "child %d answered %d datagrams", pid, n)
	}
	assert.GreaterOrEqual(t, len(served), 4)
}

func TestReusePortTCP(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{ReusePort: true, Min: 3, Max: 3, MinSpare: 1, MaxSpare: 3})
	pids := map[int]bool{}
	for range 30 {
		pids[p.askPID()] = true
	}
	assert.Greater(t, len(pids), 1, "the kernel spreads connections over the children's sockets")
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	checkReusePortHooks(t, p)
}

func TestReusePortUDP(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Network: "udp", ReusePort: true, Min: 3, Max: 3, MinSpare: 1, MaxSpare: 3})
	pids := map[int]bool{}
	for range 30 { // a client per datagram: UDP reuse-port hashes the sender's address
		pid, err := strconv.Atoi(p.datagramClient().ask("pid"))
		require.NoError(t, err)
		pids[pid] = true
	}
	assert.Greater(t, len(pids), 1, "the kernel spreads senders over the children's sockets")
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	checkReusePortHooks(t, p)
}

// In reuse-port mode the master binds nothing and each child binds between
// its PreBind and PostBind hooks, before Initialize.
func checkReusePortHooks(t *testing.T, p *pool) {
	t.Helper()
	byPID := map[int][]string{}
	for _, ev := range p.readEvents() {
		if ev.Role == "master" {
			assert.NotContains(t, []string{"PreBind", "PostBind"}, ev.Hook, "the master binds nothing")
			continue
		}
		byPID[ev.PID] = append(byPID[ev.PID], ev.Hook)
	}
	require.NotEmpty(t, byPID)
	for pid, hooks := range byPID {
		assert.Equal(t, []string{"PreBind", "PostBind", "Initialize"}, hooks[:min(3, len(hooks))], "child %d", pid)
	}
}

func TestReusePortChildThatCannotBindStopsRun(t *testing.T) {
	t.Parallel()
	p := startPoolNoWait(t, helperConfig{ReusePort: true, Min: 2, Max: 2, MinSpare: 1, MaxSpare: 2, FailPreBind: true})
	assert.Error(t, p.wait())
	assert.Contains(t, p.logText(), "children fail to start")
	assert.Contains(t, p.logText(), "PreBind refused by the test", "the master names the children's error")
}

func TestReusePortPortInUse(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0") // without SO_REUSEPORT
	require.NoError(t, err)
	defer taken.Close()
	p := startPoolNoWait(t, helperConfig{ReusePort: true, Addr: taken.Addr().String(), Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	assert.Error(t, p.wait())
	assert.Contains(t, p.logText(), "address already in use")
}

func TestIPv6(t *testing.T) {
	t.Parallel()
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	} else {
		ln.Close()
	}
	for _, network := range []string{"tcp6", "udp6"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			p := startReady(t, helperConfig{Network: network, Addr: "[::1]:0", Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1})
			if network == "tcp6" {
				assert.Equal(t, "over six", p.dial().ask("over six"))
			} else {
				c := p.datagramClient6()
				assert.Equal(t, "over six", c.ask("over six"))
			}
		})
	}
}

func (p *pool) datagramClient6() *datagramClient {
	conn, err := net.ListenPacket("udp6", "[::1]:0")
	require.NoError(p.t, err)
	p.t.Cleanup(func() { conn.Close() })
	to, err := net.ResolveUDPAddr("udp6", p.addr)
	require.NoError(p.t, err)
	return &datagramClient{t: p.t, conn: conn, to: to, buf: make([]byte, 70000)}
}

func TestUnixSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	// A socket file left behind by a server that crashed.
	stale, err := net.Listen("unix", path)
	require.NoError(t, err)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	require.FileExists(t, path)

	p := startReady(t, helperConfig{Network: "unix", Addr: path, Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	assert.Equal(t, "over unix", c.ask("over unix"))
	c.conn.Close()
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	assert.NoFileExists(t, path, "the socket file is removed on a clean stop")
}

func TestUnixSocketInUseIsNotTaken(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	live, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer live.Close()
	p := startPoolNoWait(t, helperConfig{Network: "unix", Addr: path, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	assert.Error(t, p.wait())
	assert.Contains(t, p.logText(), "address already in use")
}

func TestUnixgram(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	p := startReady(t, helperConfig{Network: "unixgram", Addr: path, Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1})
	c := p.datagramClient()
	assert.Equal(t, "over unixgram", c.ask("over unixgram"))
	_, err := strconv.Atoi(c.ask("pid"))
	assert.NoError(t, err)
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
	assert.NoFileExists(t, path)
}

func TestOversizedDatagramIsReportedNotCut(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	p := startReady(t, helperConfig{Network: "unixgram", Addr: path, Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1})
	c := p.datagramClient()
	c.send(bytes.Repeat([]byte("y"), 70000)) // more than any UDP datagram; unixgram allows it
	assert.Equal(t, "next", c.ask("next"), "the oversized datagram got no answer, the next one did")
	p.waitFor("the log of the dropped datagram", func() bool {
		return strings.Contains(p.logText(), "datagram longer than the buffer; dropped")
	})
}
