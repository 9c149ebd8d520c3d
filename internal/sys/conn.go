//go:build unix

package sys

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is an accepted stream connection whose reads and writes wait with
// a Waiter instead of the Go netpoller (see Waiter for why). It is a
// net.Conn, safe for use by several goroutines, and like *net.TCPConn it
// has CloseRead, CloseWrite and SyscallConn.
type Conn struct {
	fd      int
	waiter  *Waiter
	network string
	remote  net.Addr

	readDeadline  atomic.Int64 // UnixNano; 0: none
	writeDeadline atomic.Int64
	closing       atomic.Bool
	wrote         atomic.Bool // the last call was a Write; see Read

	mu     sync.Mutex // guards the fields below
	users  int        // calls using fd; the last one closes it after Close
	closed bool
	local  net.Addr
}

// Accept takes one connection from the non-blocking listener fd. unix.EAGAIN
// means that another child was faster.
func Accept(fd int, network string, w *Waiter) (*Conn, error) {
	nfd, sa, err := accept(fd)
	if err != nil {
		return nil, err
	}
	return &Conn{fd: nfd, waiter: w, network: network, remote: Addr(network, sa)}, nil
}

// use marks a call that uses fd, so that Close leaves the descriptor
// open (and its number unused) until the call is done with it.
func (c *Conn) use() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.users++
	return true
}

func (c *Conn) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.users--; c.users == 0 && c.closed {
		unix.Close(c.fd)
	}
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: c.network, Source: c.LocalAddr(), Addr: c.remote, Err: err}
}

// wait waits for events on fd until the deadline held in dl.
func (c *Conn) wait(events int16, dl *atomic.Int64) error {
	c.waiter.waiters.Add(1)
	defer c.waiter.waiters.Add(-1)
	if marks := c.waiter.marks; marks != nil {
		c.waiter.begun.Add(1)
		marks.Add(1)
		defer marks.Add(-1)
	}
	for {
		seen := c.waiter.Wakes() // before looking: a change after it wakes the wait
		if c.closing.Load() {
			return net.ErrClosed
		}
		at := dl.Load()
		var deadline time.Time
		if at != 0 {
			deadline = c.waiter.epoch.Add(time.Duration(at))
		}
		r, err := c.waiter.WaitFD(c.fd, events, deadline, seen)
		switch {
		case err != nil:
			return err
		case r == FDReady:
			return nil
		case r == TimedOut && dl.Load() == at:
			return os.ErrDeadlineExceeded
		} // woken, or the deadline moved: look again
	}
}

// expired reports whether the deadline held in dl has passed.
func (c *Conn) expired(dl *atomic.Int64) bool {
	at := dl.Load()
	return at != 0 && time.Since(c.waiter.epoch) >= time.Duration(at)
}

// failed is the error of a read or write that failed with err: ErrClosed if
// Close shut the socket down under it.
func (c *Conn) failed(op string, err error) error {
	if c.closing.Load() {
		return c.opError(op, net.ErrClosed)
	}
	return c.opError(op, os.NewSyscallError(op, err))
}

// Read reads up to len(b) bytes; it returns io.EOF when the peer has closed
// its side.
func (c *Conn) Read(b []byte) (int, error) {
	if !c.use() {
		return 0, c.opError("read", net.ErrClosed)
	}
	defer c.done()
	if len(b) == 0 {
		return 0, nil
	}
	// A read that follows a write is most often a server waiting for the
	// client's next request, which cannot have come yet: waiting first
	// saves the read that would find nothing. If it has come, the wait
	// returns at once.
	if c.wrote.Swap(false) {
		if err := c.wait(unix.POLLIN, &c.readDeadline); err != nil {
			return 0, c.opError("read", err)
		}
	}
	for {
		if c.closing.Load() {
			return 0, c.opError("read", net.ErrClosed)
		}
		if c.expired(&c.readDeadline) {
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		}
		n, err := unix.Read(c.fd, b)
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLIN, &c.readDeadline); err != nil {
				return 0, c.opError("read", err)
			}
		case err != nil:
			return 0, c.failed("read", err)
		case n == 0 && c.closing.Load(): // Close shut the socket down
			return 0, c.opError("read", net.ErrClosed)
		case n == 0:
			return 0, io.EOF
		default:
			return n, nil
		}
	}
}

// Write writes all of b, or returns why it could not.
func (c *Conn) Write(b []byte) (int, error) {
	if !c.use() {
		return 0, c.opError("write", net.ErrClosed)
	}
	defer c.done()
	if c.expired(&c.writeDeadline) { // even for an empty b, as package net does
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	}
	written := 0
	for written < len(b) {
		if c.closing.Load() {
			return written, c.opError("write", net.ErrClosed)
		}
		if c.expired(&c.writeDeadline) {
			return written, c.opError("write", os.ErrDeadlineExceeded)
		}
		n, err := unix.Write(c.fd, b[written:])
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			if err := c.wait(unix.POLLOUT, &c.writeDeadline); err != nil {
				return written, c.opError("write", err)
			}
		case err != nil:
			return written, c.failed("write", err)
		default:
			written += n
		}
	}
	c.wrote.Store(true)
	return written, nil
}

// Close closes the connection. Reads and writes in progress return
// net.ErrClosed.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return &net.OpError{Op: "close", Net: c.network, Source: c.local, Addr: c.remote, Err: net.ErrClosed}
	}
	c.closed = true
	c.closing.Store(true)
	if c.users == 0 {
		return os.NewSyscallError("close", unix.Close(c.fd))
	}
	// Calls still use the descriptor, so its number must not be reused
	// yet: the last one closes it. Shutting the socket down ends their
	// waits now.
	unix.Shutdown(c.fd, unix.SHUT_RDWR)
	return nil
}

func (c *Conn) shutdown(op string, how int) error {
	if !c.use() {
		return c.opError(op, net.ErrClosed)
	}
	defer c.done()
	if err := unix.Shutdown(c.fd, how); err != nil {
		return c.opError(op, os.NewSyscallError("shutdown", err))
	}
	return nil
}

// CloseRead shuts down the reading side of the connection.
func (c *Conn) CloseRead() error { return c.shutdown("close", unix.SHUT_RD) }

// CloseWrite shuts down the writing side: the peer reads EOF.
func (c *Conn) CloseWrite() error { return c.shutdown("close", unix.SHUT_WR) }

// LocalAddr returns the local address of the connection.
func (c *Conn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.local == nil && !c.closed {
		if sa, err := syscall.Getsockname(c.fd); err == nil {
			c.local = Addr(c.network, sa)
		}
	}
	return c.local
}

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.readDeadline.Store(c.since(t))
	c.writeDeadline.Store(c.since(t))
	return c.deadlineSet()
}

// SetReadDeadline sets the deadline of Read calls, current and future.
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.readDeadline.Store(c.since(t))
	return c.deadlineSet()
}

// SetWriteDeadline sets the deadline of Write calls, current and future.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.writeDeadline.Store(c.since(t))
	return c.deadlineSet()
}

func (c *Conn) deadlineSet() error {
	if c.closing.Load() {
		return c.opError("set", net.ErrClosed)
	}
	if c.waiter.waiters.Load() > 0 { // a child has one connection at a time
		c.waiter.Wake()
	}
	return nil
}

// since stores a deadline as a duration from the Waiter's epoch, so that,
// as in package net, it follows the monotonic clock when t has a reading
// of it; 0 is no deadline, and a time before the epoch is 1 ns after it.
func (c *Conn) since(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(c.waiter.epoch)), 1) // Sub saturates far in the future
}

// SyscallConn gives access to the descriptor, for socket options.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return rawConn{c}, nil }

// rawConn is the syscall.RawConn of a Conn.
type rawConn struct{ c *Conn }

func (r rawConn) Control(f func(fd uintptr)) error {
	if !r.c.use() {
		return net.ErrClosed
	}
	defer r.c.done()
	f(uintptr(r.c.fd))
	return nil
}

func (r rawConn) Read(f func(fd uintptr) bool) error {
	return r.io(unix.POLLIN, &r.c.readDeadline, f)
}

func (r rawConn) Write(f func(fd uintptr) bool) error {
	return r.io(unix.POLLOUT, &r.c.writeDeadline, f)
}

func (r rawConn) io(events int16, dl *atomic.Int64, f func(fd uintptr) bool) error {
	if !r.c.use() {
		return net.ErrClosed
	}
	defer r.c.done()
	for !f(uintptr(r.c.fd)) {
		if err := r.c.wait(events, dl); err != nil {
			return err
		}
	}
	return nil
}
