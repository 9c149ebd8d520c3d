// Package iobackend is the "database" of the benchmark's io mode: a
// stand-in server that answers each line after a fixed wait, the client that
// the servers under test use to ask it, and the relay loop that both servers
// run for each client connection, so that the prefork server and the
// ceiling differ only in how they hold their backend connections.
//
// The protocol is the echo's: a request is one line, and its answer is the
// same line.
package iobackend

import (
	"bufio"
	"errors"
	"net"
	"time"
)

const (
	// Delay is how long the stand-in takes to answer a line: a quick
	// query to a database on the same network.
	Delay = 10 * time.Millisecond
	// Timeout bounds one exchange with the backend, so that a backend that
	// stops answering cannot hold a server's connection forever.
	Timeout = 5 * time.Second
)

// Serve is the stand-in: it accepts connections on ln, a goroutine each,
// and answers every line it reads with the same line, Delay later. It
// returns once ln is closed.
func Serve(ln net.Listener) error {
	for {
		conn, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return err
		}
		if err != nil {
			// Out of descriptors, say: wait for some to be freed.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go answer(conn)
	}
}

// answer serves one connection of the stand-in.
func answer(conn net.Conn) {
	defer conn.Close()
	in := bufio.NewReader(conn)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return // the server closed its connection
		}
		// A sleep is fine here: the stand-in is not measured, it only
		// has to make the servers under test wait.
		time.Sleep(Delay)
		if _, err := conn.Write(line); err != nil {
			return
		}
	}
}

// Client holds one connection to the backend at Addr. It dials on first use
// and again after its connection broke. It is not safe for concurrent use:
// it serves one request at a time, like a prefork child.
type Client struct {
	Addr string

	conn net.Conn
	in   *bufio.Reader
}

// Dial opens the connection now, rather than at the first Ask.
func (c *Client) Dial() error {
	conn, err := net.DialTimeout("tcp", c.Addr, Timeout)
	if err != nil {
		return err
	}
	c.conn, c.in = conn, bufio.NewReader(conn)
	return nil
}

// Close closes the connection, if there is one; the next Ask dials again.
func (c *Client) Close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn, c.in = nil, nil
	}
}

// Ask sends line, which ends in '\n', and returns the backend's answer.
// If a connection that served earlier requests fails, Ask tries once more on
// a new one: a connection that sat idle may have been closed by the other
// side, and the request is safe to repeat.
func (c *Client) Ask(line []byte) ([]byte, error) {
	reused := c.conn != nil
	answer, err := c.exchange(line)
	if err != nil && reused {
		answer, err = c.exchange(line)
	}
	return answer, err
}

// exchange is one request and its answer. On an error the connection is
// closed, since its stream may be out of step.
func (c *Client) exchange(line []byte) ([]byte, error) {
	if c.conn == nil {
		if err := c.Dial(); err != nil {
			return nil, err
		}
	}
	c.conn.SetDeadline(time.Now().Add(Timeout))
	if _, err := c.conn.Write(line); err != nil {
		c.Close()
		return nil, err
	}
	answer, err := c.in.ReadBytes('\n')
	if err != nil {
		c.Close()
		return nil, err
	}
	return answer, nil
}

// Relay serves one client connection: for each line it reads from conn, it
// asks backend and writes the answer back to conn. It returns nil when the
// client closes the connection, and the error of the backend or of a write
// otherwise.
func Relay(conn net.Conn, backend *Client) error {
	in := bufio.NewReader(conn)
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			// The client closed the connection. A last line without
			// its '\n' is dropped: the backend answers whole lines.
			return nil
		}
		answer, err := backend.Ask(line)
		if err != nil {
			return err
		}
		if _, err := conn.Write(answer); err != nil {
			return err
		}
	}
}
