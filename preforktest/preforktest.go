// Package preforktest runs a prefork Child in the test's own process, as
// net/http/httptest runs an http.Handler: a test starts a Server with the
// Manager it would give to Run and talks to it over a loopback socket, with
// plain go test, no fork and no master.
//
//	func TestEcho(t *testing.T) {
//		s := preforktest.NewServer(t, &prefork.Manager{NewChild: func() prefork.Child { return echo{} }})
//		conn := s.Dial(t)
//		fmt.Fprintln(conn, "hello")
//		reply, err := bufio.NewReader(conn).ReadString('\n')
//		...
//	}
//
// The Server serves through prefork.Manager.RunInProcess, the code that
// serves in a child process: the Child's hooks are called as a child calls
// them, one request at a time, and a stop is a child's graceful stop. See
// RunInProcess for what differs from a child process.
//
// Every wait in the package has a deadline, so that a Child that hangs
// fails the test rather than hanging it.
package preforktest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
)

// ioTimeout bounds the reads and writes of the connections that Dial makes.
const ioTimeout = time.Minute

// stopMargin is how much longer than the Manager's ShutdownTimeout Close
// waits for the Child to stop.
const stopMargin = 10 * time.Second

// maxReply is the longest reply Exchange takes.
const maxReply = 64 << 10

// Server is one child of a Manager, run in the test's process on a loopback
// socket of its own.
type Server struct {
	// Network is the socket's network: "tcp", "udp", "unix" or
	// "unixgram".
	Network string
	// Addr is the socket's address: 127.0.0.1 and a port the system
	// chose, or the path of a Unix socket.
	Addr net.Addr

	ln   net.Listener   // for stream networks
	pc   net.PacketConn // for packet networks
	dir  string         // a directory of Start's, removed by Close
	stop context.CancelFunc
	wait time.Duration // how long Close waits for the run to end
	done chan struct{} // closed when the run has ended
	err  error         // the run's error, once done is closed

	closing  sync.Once
	closeErr error
	returned atomic.Bool // Close has returned closeErr to its caller
}

// NewServer starts a Server that runs m's Child, and closes it when the
// test ends. m.Network selects the socket: "" (TCP), "tcp", "tcp4" and
// "tcp6" are TCP, "udp", "udp4" and "udp6" UDP, both on 127.0.0.1 with a
// port the system picks; "unix" and "unixgram" are a socket file in
// tb.TempDir. m.Addr is not used. NewServer copies m and never writes to
// it: later changes to m do not reach the Server.
//
// The Server takes connections at once; the Child's NewChild and
// Initialize run meanwhile, before its first request. A socket that cannot
// be bound fails the test. When the test ends the Server is closed, and an
// error of its run that no call of Close has returned, such as a
// *prefork.PanicError, fails the test.
func NewServer(tb testing.TB, m *prefork.Manager) *Server {
	tb.Helper()
	s, err := start(m, tb.TempDir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.close(); err != nil && !s.returned.Load() {
			tb.Errorf("preforktest: the Server's Child: %v", err)
		}
	})
	return s
}

// Start is NewServer for code that has no testing.TB, such as an Example
// or a program run under a debugger: it returns the errors that fail
// NewServer's test, and the caller must Close the Server.
func Start(m *prefork.Manager) (*Server, error) {
	return start(m, nil)
}

// start binds the socket and runs the child; tempDir, if not nil, gives
// the directory of a Unix socket.
func start(m *prefork.Manager, tempDir func() string) (*Server, error) {
	if m == nil {
		return nil, errors.New("preforktest: nil Manager")
	}
	m = clone(m)
	s := &Server{done: make(chan struct{}), wait: m.ShutdownTimeout + stopMargin}
	if m.ShutdownTimeout <= 0 {
		s.wait = prefork.DefaultShutdownTimeout + stopMargin
	}
	if err := s.listen(m.Network, tempDir); err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go func() {
		defer close(s.done)
		if s.pc != nil {
			s.err = m.RunInProcessPacket(ctx, s.pc)
			s.pc.Close()
			return
		}
		s.err = m.RunInProcess(ctx, s.ln)
		s.ln.Close() // a client then fails at once, when the run has ended early
	}()
	return s, nil
}

// clone copies m's settings, its exported fields: a Manager holds a mutex,
// and cannot be copied whole.
func clone(m *prefork.Manager) *prefork.Manager {
	c := new(prefork.Manager)
	from, to := reflect.ValueOf(m).Elem(), reflect.ValueOf(c).Elem()
	for i := range from.NumField() {
		if from.Type().Field(i).IsExported() {
			to.Field(i).Set(from.Field(i))
		}
	}
	return c
}

func (s *Server) listen(network string, tempDir func() string) error {
	var err error
	switch network {
	case "", "tcp", "tcp4", "tcp6":
		s.ln, err = net.Listen("tcp", "127.0.0.1:0")
	case "udp", "udp4", "udp6":
		s.pc, err = net.ListenPacket("udp", "127.0.0.1:0")
	case "unix", "unixgram":
		var dir string
		if tempDir != nil {
			dir = tempDir()
		} else if dir, err = os.MkdirTemp("", "preforktest"); err != nil {
			return fmt.Errorf("preforktest: %w", err)
		} else {
			s.dir = dir
		}
		if network == "unix" {
			s.ln, err = net.Listen(network, filepath.Join(dir, "s"))
		} else {
			s.pc, err = net.ListenPacket(network, filepath.Join(dir, "s"))
		}
	default:
		return fmt.Errorf("preforktest: Manager.Network %q is not supported; use \"tcp\", \"udp\", \"unix\" or \"unixgram\"", network)
	}
	if err != nil {
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
		return fmt.Errorf("preforktest: %w", err)
	}
	if s.ln != nil {
		s.Addr = s.ln.Addr()
	} else {
		s.Addr = s.pc.LocalAddr()
	}
	s.Network = s.Addr.Network()
	return nil
}

// Dial connects a client to s, and closes the connection when the test
// ends. For a packet network the connection is a client socket of its own
// (for unixgram, bound to a file in tb.TempDir, so that it can be
// answered): each Write sends a datagram to s, and Read returns a reply.
// The connection's reads and writes fail after a minute, unless the test
// sets another deadline. An error fails the test: call Dial from the
// test's goroutine.
func (s *Server) Dial(tb testing.TB) net.Conn {
	tb.Helper()
	var conn net.Conn
	var err error
	if s.Network == "unixgram" {
		local := &net.UnixAddr{Name: filepath.Join(tb.TempDir(), "c"), Net: s.Network}
		conn, err = net.DialUnix(s.Network, local, s.Addr.(*net.UnixAddr))
	} else {
		conn, err = net.DialTimeout(s.Network, s.Addr.String(), ioTimeout)
	}
	if err != nil {
		tb.Fatalf("preforktest: %v", err)
	}
	tb.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(ioTimeout))
	return conn
}

// Exchange sends datagram to s, a Server of a packet network, from a new
// client socket, and returns the reply. No reply within a minute fails the
// test, as any other error does: for a datagram that gets no reply, write
// it to a connection from Dial instead. Call Exchange from the test's
// goroutine.
func (s *Server) Exchange(tb testing.TB, datagram []byte) []byte {
	tb.Helper()
	if s.pc == nil {
		tb.Fatalf("preforktest: Exchange is for packet networks (udp, unixgram), not %s", s.Network)
	}
	conn := s.Dial(tb)
	defer conn.Close()
	if _, err := conn.Write(datagram); err != nil {
		tb.Fatalf("preforktest: %v", err)
	}
	reply := make([]byte, maxReply+1)
	n, err := conn.Read(reply)
	switch {
	case err != nil:
		tb.Fatalf("preforktest: no reply: %v", err)
	case n > maxReply:
		tb.Fatalf("preforktest: the reply is longer than Exchange takes (%d bytes)", maxReply)
	}
	return reply[:n]
}

// Close stops s as a child stops with its pool: Request.Stopping is
// closed, the request in hand may finish within the Manager's
// ShutdownTimeout (its context is cancelled then), and the Child's Shutdown
// runs. Close waits for that, closes s's socket, and returns the run's
// error: nil, or what ended the run, such as a *prefork.PanicError or the
// error of Initialize. If the Child has not stopped ShutdownTimeout and ten
// seconds after Close (a request that ignores its context), Close returns
// an error and leaves it running. Close may be called more than once; it
// returns the same each time.
func (s *Server) Close() error {
	err := s.close()
	s.returned.Store(true)
	return err
}

func (s *Server) close() error {
	s.closing.Do(func() {
		s.stop()
		timeout := time.NewTimer(s.wait)
		defer timeout.Stop()
		select {
		case <-s.done:
			s.closeErr = s.err
		case <-timeout.C:
			s.closeErr = fmt.Errorf("preforktest: the Child has not stopped %v after Close", s.wait)
		}
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
	})
	return s.closeErr
}
