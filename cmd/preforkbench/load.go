//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// linesPerConn is how many lines a tcp-keepalive client sends on one
	// connection before it opens the next.
	linesPerConn = 100
	// udpTimeout is how long a udp client waits for its datagram back;
	// past it the request is an error.
	udpTimeout = time.Second
	// grace is how long a request in flight at the end of a row may still
	// take: a hard deadline on every socket, so that no client can hang.
	grace = time.Second
	// maxStale bounds the late answers a udp client skips while it waits
	// for the one it asked for.
	maxStale = 100
)

var errWrongEcho = errors.New("the echo differs from the request")

// loadResult is one row's client-side figures.
type loadResult struct {
	requests int           // successful ones
	p50, p99 time.Duration // latencies of the successful requests
	errors   int
	firstErr error // one of the errors, to tell what went wrong
	elapsed  time.Duration
}

// limits is what every client of a row checks before each request.
type limits struct {
	ctx    context.Context // done at the end of the row, or on SIGINT
	end    time.Time       // the end of the row
	budget *atomic.Int64   // requests left for the row, shared by its clients
	hard   time.Time       // deadline of every socket operation
}

// more tells whether a client may start one more request, and takes it from
// the budget.
func (l *limits) more() bool {
	return l.ctx.Err() == nil && l.budget.Add(-1) >= 0
}

// client is one load goroutine's figures: each has its own, so the clients
// share nothing but the budget.
type client struct {
	latencies []time.Duration
	errors    int
	firstErr  error
}

// fail counts a failed request. A connect cut by the end of the row is not
// one: the connect is the only step that the end of the row cuts (the others
// have until l.hard), and it can fail with "i/o timeout" a moment before ctx
// says the row is over, so the clock decides. The pause keeps a client whose
// server refuses everything from spinning.
func (c *client) fail(l *limits, err error, connecting bool) {
	if connecting && (l.ctx.Err() != nil || !time.Now().Before(l.end)) {
		return
	}
	c.errors++
	if c.firstErr == nil {
		c.firstErr = err
	}
	time.Sleep(time.Millisecond)
}

// runLoad runs conc clients of the given mode against addr for dur or
// maxRequests requests, whichever ends first.
func runLoad(ctx context.Context, mode, addr string, conc int, dur time.Duration, maxRequests int) loadResult {
	start := time.Now()
	end := start.Add(dur)
	rowCtx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var budget atomic.Int64
	budget.Store(int64(maxRequests))
	l := &limits{ctx: rowCtx, end: end, budget: &budget, hard: end.Add(grace)}

	clients := make([]client, conc)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch mode {
			case "tcp-conn":
				tcpConnClient(l, addr, &clients[i])
			case "tcp-keepalive", "io":
				tcpKeepaliveClient(l, addr, &clients[i])
			case "udp":
				udpClient(l, addr, &clients[i])
			case "http-conn":
				httpConnClient(l, addr, &clients[i])
			case "http-keepalive", "http-io":
				httpKeepaliveClient(l, addr, &clients[i])
			}
		}()
	}
	wg.Wait()

	res := loadResult{elapsed: time.Since(start)}
	var latencies []time.Duration
	for _, c := range clients {
		latencies = append(latencies, c.latencies...)
		res.errors += c.errors
		if res.firstErr == nil {
			res.firstErr = c.firstErr
		}
	}
	slices.Sort(latencies)
	res.requests = len(latencies)
	res.p50, res.p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
	return res
}

// request is the line of a request: fixed length, numbered so that a late
// UDP answer is not taken for the current one.
func request(buf []byte, seq int) []byte {
	return fmt.Appendf(buf[:0], "ping %010d\n", seq)
}

// tcpConnClient opens a connection per request.
func tcpConnClient(l *limits, addr string, c *client) {
	buf, answer := make([]byte, 0, 32), make([]byte, 32)
	seq := 0
	connPerRequest(l, addr, c, func(conn net.Conn) error {
		seq++
		return roundTrip(conn, request(buf, seq), answer)
	})
}

// connPerRequest runs exchange on a new connection for each request until
// the row is over, and records the latency from the dial to the end of
// the exchange.
func connPerRequest(l *limits, addr string, c *client, exchange func(net.Conn) error) {
	d := net.Dialer{Deadline: l.hard}
	for l.more() {
		start := time.Now()
		conn, err := d.DialContext(l.ctx, "tcp", addr)
		if err != nil {
			c.fail(l, err, true)
			continue
		}
		conn.SetDeadline(l.hard)
		err = exchange(conn)
		took := time.Since(start) // the close is not part of the latency
		conn.Close()
		if err != nil {
			c.fail(l, err, false)
			continue
		}
		c.latencies = append(c.latencies, took)
	}
}

// tcpKeepaliveClient sends linesPerConn lines per connection.
func tcpKeepaliveClient(l *limits, addr string, c *client) {
	d := net.Dialer{Deadline: l.hard}
	buf, answer := make([]byte, 0, 32), make([]byte, 32)
	var conn net.Conn
	lines := 0
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for seq := 0; l.more(); seq++ {
		if conn == nil {
			var err error
			if conn, err = d.DialContext(l.ctx, "tcp", addr); err != nil {
				c.fail(l, err, true)
				continue
			}
			conn.SetDeadline(l.hard)
			lines = 0
		}
		msg := request(buf, seq)
		start := time.Now()
		if err := roundTrip(conn, msg, answer); err != nil {
			conn.Close()
			conn = nil
			c.fail(l, err, false)
			continue
		}
		c.latencies = append(c.latencies, time.Since(start))
		if lines++; lines == linesPerConn {
			conn.Close()
			conn = nil
		}
	}
}

// roundTrip writes msg and reads its echo into answer.
func roundTrip(conn net.Conn, msg, answer []byte) error {
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(conn, answer[:len(msg)]); err != nil {
		return err
	}
	if !bytes.Equal(answer[:len(msg)], msg) {
		return errWrongEcho
	}
	return nil
}

// udpClient sends one datagram at a time from a connected socket of its own.
func udpClient(l *limits, addr string, c *client) {
	var d net.Dialer
	buf, answer := make([]byte, 0, 32), make([]byte, 64)
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for seq := 0; l.more(); seq++ {
		if conn == nil {
			var err error
			if conn, err = d.DialContext(l.ctx, "udp", addr); err != nil {
				c.fail(l, err, true)
				continue
			}
		}
		msg := request(buf, seq)
		start := time.Now()
		conn.SetDeadline(start.Add(udpTimeout))
		if err := udpRoundTrip(conn, msg, answer); err != nil {
			c.fail(l, err, false)
			continue
		}
		c.latencies = append(c.latencies, time.Since(start))
	}
}

// udpRoundTrip sends msg and waits for the same datagram back, skipping
// late answers to earlier requests that timed out.
func udpRoundTrip(conn net.Conn, msg, answer []byte) error {
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	for range maxStale {
		n, err := conn.Read(answer)
		if err != nil {
			return err
		}
		if bytes.Equal(answer[:n], msg) {
			return nil
		}
	}
	return errWrongEcho
}

// percentile is the nearest-rank q-quantile of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
