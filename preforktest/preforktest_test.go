package preforktest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforktest"
	"github.com/stretchr/testify/require"
)

// waitLimit bounds every wait of these tests: far more than any of them
// takes, even under the race detector on a busy machine.
const waitLimit = 30 * time.Second

// recorder is a Child with every hook a child calls. It records each call,
// in order; ProcessRequest echoes a line, or a datagram, unless process is
// set.
type recorder struct {
	deny    bool  // AllowDeny refuses every request
	initErr error // Initialize returns it
	process func(ctx context.Context, r *prefork.Request) error

	mu      sync.Mutex
	calls   []string
	ended   []error // what PostProcessRequest was given, for each request
	stopErr error   // what Shutdown was given
}

func (c *recorder) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, fmt.Sprintf(format, args...))
}

// log returns the calls so far.
func (c *recorder) log() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

func (c *recorder) manager() *prefork.Manager {
	return &prefork.Manager{NewChild: func() prefork.Child { c.add("NewChild"); return c }}
}

func (c *recorder) Initialize(context.Context) error {
	c.add("Initialize")
	return c.initErr
}

func (c *recorder) PostAccept(_ context.Context, r *prefork.Request) error {
	c.add("PostAccept %s served %d", r.Network, r.Served)
	return nil
}

func (c *recorder) AllowDeny(_ context.Context, r *prefork.Request) bool {
	c.add("AllowDeny")
	return !c.deny
}

func (c *recorder) RequestDenied(_ context.Context, r *prefork.Request) {
	c.add("RequestDenied")
	r.Reply([]byte("denied\n"))
}

func (c *recorder) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	if c.process != nil {
		c.add("ProcessRequest")
		return c.process(ctx, r)
	}
	if r.Conn == nil {
		c.add("ProcessRequest %q", r.Data)
		return r.Reply(r.Data)
	}
	line, err := bufio.NewReader(r.Conn).ReadString('\n')
	c.add("ProcessRequest %q", line)
	if err != nil {
		return err
	}
	return r.Reply([]byte(line))
}

func (c *recorder) PostProcessRequest(_ context.Context, _ *prefork.Request, err error) {
	c.add("PostProcessRequest")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = append(c.ended, err)
}

func (c *recorder) Shutdown(_ context.Context, err error) {
	c.add("Shutdown")
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopErr = err
}

// ask sends a line on a new connection and returns the reply line.
func ask(t *testing.T, s *preforktest.Server, line string) string {
	t.Helper()
	conn := s.Dial(t)
	defer conn.Close()
	_, err := fmt.Fprintln(conn, line)
	require.NoError(t, err)
	reply, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSuffix(reply, "\n")
}

// closed reports whether ch is closed within waitLimit: a Child's wait that
// cannot hang the test.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(waitLimit):
		return false
	}
}

// The hooks of a child are called in order, once per request for the
// request's hooks, on every network.
func TestHooksAreCalledInOrder(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"tcp", "udp", "unix", "unixgram"} {
		t.Run(network, func(t *testing.T) {
			t.Parallel()
			c := &recorder{}
			m := c.manager()
			m.Network = network
			s := preforktest.NewServer(t, m)
			require.Equal(t, network, s.Network)
			for _, msg := range []string{"one", "two"} {
				if s.Network == "tcp" || s.Network == "unix" {
					require.Equal(t, msg, ask(t, s, msg))
				} else {
					require.Equal(t, msg, string(s.Exchange(t, []byte(msg))))
				}
			}
			require.NoError(t, s.Close())

			var want []string
			for i, msg := range []string{"one", "two"} {
				if s.Network == "tcp" || s.Network == "unix" {
					msg += "\n"
				}
				want = append(want, fmt.Sprintf("PostAccept %s served %d", network, i), "AllowDeny",
					fmt.Sprintf("ProcessRequest %q", msg), "PostProcessRequest")
			}
			want = append(append([]string{"NewChild", "Initialize"}, want...), "Shutdown")
			require.Equal(t, want, c.log())
			require.Equal(t, []error{nil, nil}, c.ended)
			require.NoError(t, c.stopErr, "a stop by Close is a normal end")
		})
	}
}

func TestDeniedRequest(t *testing.T) {
	t.Parallel()
	c := &recorder{deny: true}
	s := preforktest.NewServer(t, c.manager())
	require.Equal(t, "denied", ask(t, s, "hello"))
	require.NoError(t, s.Close())
	require.Equal(t, []string{"NewChild", "Initialize", "PostAccept tcp served 0", "AllowDeny", "RequestDenied", "PostProcessRequest", "Shutdown"}, c.log())
	require.Len(t, c.ended, 1)
	require.ErrorIs(t, c.ended[0], prefork.ErrRequestDenied)
}

func TestDeniedDatagram(t *testing.T) {
	t.Parallel()
	c := &recorder{deny: true}
	m := c.manager()
	m.Network = "udp"
	s := preforktest.NewServer(t, m)
	require.Equal(t, "denied\n", string(s.Exchange(t, []byte("hello"))))
	require.NoError(t, s.Close())
	require.Equal(t, []string{"NewChild", "Initialize", "PostAccept udp served 0", "AllowDeny", "RequestDenied", "PostProcessRequest", "Shutdown"}, c.log())
	require.ErrorIs(t, c.ended[0], prefork.ErrRequestDenied)
}

// A panic in a hook ends the run as it ends a child, and Close returns it.
func TestPanicEndsTheRun(t *testing.T) {
	t.Parallel()
	c := &recorder{process: func(context.Context, *prefork.Request) error { panic("broken") }}
	m := c.manager()
	m.Logger = slog.New(slog.DiscardHandler) // the panic is logged, with its stack
	s := preforktest.NewServer(t, m)
	conn := s.Dial(t)
	fmt.Fprintln(conn, "hello")
	_, err := bufio.NewReader(conn).ReadString('\n')
	require.Error(t, err, "the connection of a request that panicked is closed")

	err = s.Close()
	var p *prefork.PanicError
	require.ErrorAs(t, err, &p)
	require.Equal(t, "ProcessRequest", p.Hook)
	require.Equal(t, "broken", p.Value)
	require.Equal(t, err, s.Close(), "Close returns the same again")
	require.ErrorAs(t, c.stopErr, &p, "Shutdown is told")
	require.Equal(t, []string{"NewChild", "Initialize", "PostAccept tcp served 0", "AllowDeny", "ProcessRequest", "PostProcessRequest", "Shutdown"}, c.log())
}

// Close lets the request in flight finish: Stopping is closed, the
// request's context is not cancelled, then Shutdown runs.
func TestCloseLetsTheRequestFinish(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	var ctxErr error
	c := &recorder{process: func(ctx context.Context, r *prefork.Request) error {
		close(started)
		if !closed(r.Stopping()) {
			return errors.New("Stopping was not closed")
		}
		ctxErr = ctx.Err()
		return r.Reply([]byte("finished\n"))
	}}
	m := c.manager()
	m.ShutdownTimeout = time.Minute
	s := preforktest.NewServer(t, m)
	conn := s.Dial(t)
	fmt.Fprintln(conn, "hello")
	require.True(t, closed(started), "the request did not start")

	require.NoError(t, s.Close())
	require.NoError(t, ctxErr, "a graceful stop does not cancel the request")
	reply, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "finished\n", reply)
	require.Equal(t, []string{"NewChild", "Initialize", "PostAccept tcp served 0", "AllowDeny", "ProcessRequest", "PostProcessRequest", "Shutdown"}, c.log())
	require.Equal(t, []error{nil}, c.ended)
}

// A request that goes on after ShutdownTimeout has its context cancelled.
func TestShutdownTimeoutCancelsTheRequest(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	stoppingFirst := false
	c := &recorder{process: func(ctx context.Context, r *prefork.Request) error {
		close(started)
		if !closed(ctx.Done()) {
			return errors.New("ctx was not cancelled")
		}
		select {
		case <-r.Stopping():
			stoppingFirst = true
		default:
		}
		return ctx.Err()
	}}
	m := c.manager()
	m.ShutdownTimeout = 50 * time.Millisecond
	m.Logger = slog.New(slog.DiscardHandler) // the request's error is logged
	s := preforktest.NewServer(t, m)
	fmt.Fprintln(s.Dial(t), "hello")
	require.True(t, closed(started), "the request did not start")
	require.NoError(t, s.Close())
	require.True(t, stoppingFirst, "Stopping is closed before ctx is cancelled")
	require.Len(t, c.ended, 1)
	require.ErrorIs(t, c.ended[0], context.Canceled)
}

// RequestTimeout bounds a request as in a child: its ctx has the deadline.
func TestRequestTimeoutCancelsTheRequest(t *testing.T) {
	t.Parallel()
	c := &recorder{process: func(ctx context.Context, r *prefork.Request) error {
		closed(ctx.Done())
		select {
		case <-r.Stopping():
			return r.Reply([]byte("stopping\n"))
		default:
		}
		return r.Reply([]byte(fmt.Sprintln(ctx.Err())))
	}}
	m := c.manager()
	m.RequestTimeout = 50 * time.Millisecond
	s := preforktest.NewServer(t, m)
	start := time.Now()
	require.Equal(t, context.DeadlineExceeded.Error(), ask(t, s, "hello"))
	require.Less(t, time.Since(start), waitLimit)
	require.Equal(t, context.DeadlineExceeded.Error(), ask(t, s, "again"), "the next request has its own deadline")
	require.NoError(t, s.Close())
}

func TestInitializeErrorIsReturned(t *testing.T) {
	t.Parallel()
	refused := errors.New("no database")
	c := &recorder{initErr: refused}
	s := preforktest.NewServer(t, c.manager())
	err := s.Close()
	require.ErrorIs(t, err, refused)
	require.ErrorIs(t, c.stopErr, refused, "Shutdown is told")
	require.Equal(t, []string{"NewChild", "Initialize", "Shutdown"}, c.log())
}

func TestBadManagerIsReturned(t *testing.T) {
	t.Parallel()
	s := preforktest.NewServer(t, &prefork.Manager{})
	require.ErrorIs(t, s.Close(), prefork.ErrInvalidConfig)

	_, err := preforktest.Start(&prefork.Manager{Network: "sctp"})
	require.ErrorContains(t, err, `"sctp" is not supported`)
}

// The Server copies the Manager: it never writes to it, and later changes
// to it do not reach the Server.
func TestServerCopiesTheManager(t *testing.T) {
	t.Parallel()
	c := &recorder{}
	m := c.manager()
	m.MaxRequests = 5
	s := preforktest.NewServer(t, m)
	m.NewChild = nil // changed at once, while the Server starts
	require.Equal(t, "hello", ask(t, s, "hello"))
	require.NoError(t, s.Close())
	require.Empty(t, m.Network)
	require.Empty(t, m.Addr)
	require.Equal(t, 5, m.MaxRequests)
}

// Once Close has returned, the Server has left nothing running.
func TestNoGoroutineIsLeft(t *testing.T) { // not parallel: it counts the goroutines of the whole test binary
	before := runtime.NumGoroutine()
	for _, network := range []string{"tcp", "udp"} {
		t.Run(network, func(t *testing.T) {
			c := &recorder{process: func(ctx context.Context, r *prefork.Request) error {
				closed(ctx.Done()) // RequestTimeout's timer, and the deadline on the connection
				return r.Reply([]byte("done\n"))
			}}
			m := c.manager()
			m.Network = network
			m.RequestTimeout = time.Millisecond
			s := preforktest.NewServer(t, m)
			if network == "tcp" {
				require.Equal(t, "done", ask(t, s, "hello"))
			} else {
				require.Equal(t, "done\n", string(s.Exchange(t, []byte("hello"))))
			}
			require.NoError(t, s.Close())
		})
	}
	// A goroutine that has done its work may take a moment to exit.
	deadline := time.Now().Add(waitLimit)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	require.LessOrEqual(t, runtime.NumGoroutine(), before)
}
