package prefork_test

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// inProcessChild records what RunInProcess gives it.
type inProcessChild struct {
	served   chan *prefork.Request // each request, once served
	replied  chan error            // what Reply returned, for datagrams
	shutdown chan error            // what Shutdown was given
}

func newInProcessChild() *inProcessChild {
	return &inProcessChild{served: make(chan *prefork.Request, 10), replied: make(chan error, 10), shutdown: make(chan error, 1)}
}

func (c *inProcessChild) ProcessRequest(_ context.Context, r *prefork.Request) error {
	defer func() { c.served <- r }()
	if r.Conn == nil {
		c.replied <- r.Reply(r.Data)
		return nil
	}
	line, err := bufio.NewReader(r.Conn).ReadString('\n')
	if err != nil {
		return err
	}
	return r.Reply([]byte(line))
}

func (c *inProcessChild) Shutdown(_ context.Context, err error) { c.shutdown <- err }

// startInProcess runs m.RunInProcess on ln and returns the channel of its
// result.
func startInProcess(ctx context.Context, m *prefork.Manager, ln net.Listener) <-chan error {
	done := make(chan error, 1)
	go func() { done <- m.RunInProcess(ctx, ln) }()
	return done
}

// receive waits for a value on ch, for waitLimit at most.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func askOnce(t *testing.T, ln net.Listener, line string) string {
	t.Helper()
	conn, err := net.DialTimeout(ln.Addr().Network(), ln.Addr().String(), waitLimit)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLimit))
	_, err = conn.Write([]byte(line + "\n"))
	require.NoError(t, err)
	reply, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	return reply
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// RunInProcess checks the Manager as Run does, but for Network and Addr,
// and refuses a listener it could not stop waiting on; nothing is called
// then.
func TestRunInProcessChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ln := listenLoopback(t)
	err := (&prefork.Manager{}).RunInProcess(ctx, ln)
	assert.ErrorIs(t, err, prefork.ErrInvalidConfig)
	assert.ErrorContains(t, err, "NewChild is nil")

	called := false
	newChild := func() prefork.Child { called = true; return newInProcessChild() }
	err = (&prefork.Manager{NewChild: newChild, RequestTimeout: -1}).RunInProcess(ctx, ln)
	assert.ErrorIs(t, err, prefork.ErrInvalidConfig)
	assert.ErrorContains(t, err, "RequestTimeout is negative")

	err = (&prefork.Manager{NewChild: newChild}).RunInProcess(ctx, nil)
	assert.ErrorContains(t, err, "nil listener")
	err = (&prefork.Manager{NewChild: newChild}).RunInProcess(ctx, struct{ net.Listener }{ln})
	assert.ErrorContains(t, err, "no SetDeadline method")
	err = (&prefork.Manager{NewChild: newChild}).RunInProcessPacket(ctx, nil)
	assert.ErrorContains(t, err, "nil PacketConn")
	assert.False(t, called, "NewChild is not called")

	// Network and Addr are the listener's business.
	done, stop := context.WithCancel(ctx)
	stop()
	err = (&prefork.Manager{NewChild: newChild, Network: "sctp"}).RunInProcess(done, ln)
	assert.NoError(t, err)
	assert.True(t, called)
}

// The caller owns the listener: RunInProcess neither closes it nor leaves
// a deadline on it.
func TestRunInProcessLeavesTheListenerToTheCaller(t *testing.T) {
	t.Parallel()
	ln := listenLoopback(t)
	c := newInProcessChild()
	ctx, stop := context.WithCancel(context.Background())
	done := startInProcess(ctx, &prefork.Manager{NewChild: func() prefork.Child { return c }}, ln)
	assert.Equal(t, "hello\n", askOnce(t, ln, "hello"))
	r := <-c.served
	_, isTCP := r.Conn.(*net.TCPConn)
	assert.True(t, isTCP, "Request.Conn is the listener's own connection, not a %T", r.Conn)
	assert.Equal(t, "tcp", r.Network)
	assert.Equal(t, "tcp "+ln.Addr().String(), r.SocketName)
	stop()
	require.NoError(t, receive(t, done, "the end of RunInProcess"))
	assert.NoError(t, <-c.shutdown, "a stop by ctx is a normal end")

	accepted := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err == nil {
			conn.Close()
		}
		accepted <- err
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	select {
	case err := <-accepted:
		require.NoError(t, err, "the listener is open, without a deadline")
	case <-time.After(waitLimit):
		t.Fatal("the listener did not accept")
	}
}

// RunInProcess is not the Manager's run: a closed Manager still runs a
// child in process, and Shutdown does not stop it. (That Run works after
// RunInProcess is TestRunAfterRunInProcess.)
func TestRunInProcessIsNotTheManagersRun(t *testing.T) {
	t.Parallel()
	ln := listenLoopback(t)
	c := newInProcessChild()
	m := &prefork.Manager{NewChild: func() prefork.Child { return c }}
	require.NoError(t, m.Close())
	ctx, stop := context.WithCancel(context.Background())
	done := startInProcess(ctx, m, ln)
	assert.Equal(t, "one\n", askOnce(t, ln, "one"))
	require.NoError(t, m.Shutdown(context.Background()))
	assert.Equal(t, "two\n", askOnce(t, ln, "two"))
	stop()
	require.NoError(t, receive(t, done, "the end of RunInProcess"))
}

// A child in process leaves after MaxRequests, as a child process does.
func TestRunInProcessStopsAfterMaxRequests(t *testing.T) {
	t.Parallel()
	ln := listenLoopback(t)
	c := newInProcessChild()
	done := startInProcess(context.Background(), &prefork.Manager{MaxRequests: 2, NewChild: func() prefork.Child { return c }}, ln)
	for _, line := range []string{"one", "two"} {
		assert.Equal(t, line+"\n", askOnce(t, ln, line))
	}
	require.NoError(t, receive(t, done, "the end of RunInProcess"))
	assert.NoError(t, <-c.shutdown)
	assert.Equal(t, 0, (<-c.served).Served)
	assert.Equal(t, 1, (<-c.served).Served)
}

// Over unixgram, a datagram too long for a child is dropped, and one from
// an unbound socket cannot be answered, as in a child process.
func TestRunInProcessPacketDatagrams(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "s")
	pc, err := net.ListenPacket("unixgram", path)
	require.NoError(t, err)
	defer pc.Close()
	c := newInProcessChild()
	ctx, stop := context.WithCancel(context.Background())
	m := &prefork.Manager{NewChild: func() prefork.Child { return c }, Logger: slog.New(slog.DiscardHandler)} // it logs the long datagram
	done := make(chan error, 1)
	go func() { done <- m.RunInProcessPacket(ctx, pc) }()

	unbound, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	require.NoError(t, err)
	defer unbound.Close()
	require.NoError(t, unbound.SetWriteBuffer(256<<10))
	_, err = unbound.Write(make([]byte, 70000))
	require.NoError(t, err)
	_, err = unbound.Write([]byte("short"))
	require.NoError(t, err)

	r := receive(t, c.served, "a request")
	assert.Equal(t, 0, r.Served, "the long datagram was dropped")
	assert.Nil(t, r.RemoteAddr)
	assert.Equal(t, "unixgram", r.Network)
	assert.ErrorContains(t, <-c.replied, "no address to reply to")

	bound, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "c"), Net: "unixgram"})
	require.NoError(t, err)
	defer bound.Close()
	_, err = bound.WriteTo([]byte("ping"), pc.LocalAddr())
	require.NoError(t, err)
	bound.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 100)
	n, err := bound.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf[:n]))
	assert.NoError(t, <-c.replied)

	stop()
	require.NoError(t, receive(t, done, "the end of RunInProcess"))
}

// A master that has run a child in process first still runs its pool.
func TestRunAfterRunInProcess(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1, InProcessFirst: true})
	ev := p.waitEvent("master", "InProcess")
	assert.Equal(t, strconv.Itoa(p.cmd.Process.Pid), ev.Detail, "the master served the request itself")
	assert.NotEqual(t, p.cmd.Process.Pid, p.askPID(), "a child serves the pool's requests")
}

// inProcessFirst runs m's Child in process on a socket of its own for one
// request, as a program might before Run, and returns the reply to "pid".
func inProcessFirst(m *prefork.Manager) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.RunInProcess(ctx, ln) }()
	conn, err := net.DialTimeout("tcp", ln.Addr().String(), waitLimit)
	if err != nil {
		stop()
		return "", errors.Join(err, <-done)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLimit))
	conn.Write([]byte("pid\n"))
	reply, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close() // the end of the request: the Child reads lines until then
	stop()
	return strings.TrimSuffix(reply, "\n"), errors.Join(err, <-done)
}
