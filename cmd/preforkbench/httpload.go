//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The load generators of the HTTP modes, the "client" of a row.
const (
	// clientOwn is this program's own client (and the only one of the
	// other modes).
	clientOwn = "own"
	// clientWrk is wrk, a separate process.
	clientWrk = "wrk"
)

// httpPath is the path that the HTTP modes ask for; the servers' handlers
// answer every path alike.
const httpPath = "/"

var errHTTPStatus = errors.New("HTTP status is not 200 OK")

// httpRequest is the request that a client of the HTTP modes sends to addr,
// with "Connection: close" if closing.
func httpRequest(addr string, closing bool) []byte {
	req := "GET " + httpPath + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: preforkbench\r\n"
	if closing {
		req += "Connection: close\r\n"
	}
	return []byte(req + "\r\n")
}

// The HTTP clients write the request's bytes on a net.Conn and read the
// answer with http.ReadResponse: no goroutines, channels or connection pool
// of net/http's Transport between the client and the socket, so that the
// load generator, which shares the CPUs with the servers, takes as little
// of them as it can. Both servers get the same client.

// httpConnClient opens a connection per request and asks the server to
// close it after its answer.
func httpConnClient(l *limits, addr string, c *client) {
	req := httpRequest(addr, true)
	in := bufio.NewReader(nil)
	connPerRequest(l, addr, c, func(conn net.Conn) error {
		in.Reset(conn)
		_, err := httpRoundTrip(conn, in, req)
		return err
	})
}

// httpKeepaliveClient sends all its requests on one connection, kept alive
// for the whole row; it opens another only if the server closes it, or
// after an error that leaves the stream out of step (a response whose status
// is not 200 does not).
func httpKeepaliveClient(l *limits, addr string, c *client) {
	d := net.Dialer{Deadline: l.hard}
	req := httpRequest(addr, false)
	in := bufio.NewReader(nil)
	var conn net.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for l.more() {
		if conn == nil {
			var err error
			if conn, err = d.DialContext(l.ctx, "tcp", addr); err != nil {
				c.fail(l, err, true)
				continue
			}
			conn.SetDeadline(l.hard)
			in.Reset(conn)
		}
		start := time.Now()
		closed, err := httpRoundTrip(conn, in, req)
		took := time.Since(start)
		if closed {
			conn.Close()
			conn = nil
		}
		if err != nil {
			c.fail(l, err, false)
			continue
		}
		c.latencies = append(c.latencies, took)
	}
}

// httpRoundTrip writes req and reads the whole response from in, which
// reads conn. It fails unless the status is 200 OK. closed tells that the
// connection cannot carry another request: the server closes it after this
// response, or the exchange failed.
func httpRoundTrip(conn net.Conn, in *bufio.Reader, req []byte) (closed bool, err error) {
	if _, err := conn.Write(req); err != nil {
		return true, err
	}
	resp, err := http.ReadResponse(in, nil)
	if err != nil {
		return true, err
	}
	// The body ends at its Content-Length (or at the end of its chunks):
	// a response cut short fails here.
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return true, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.Close, fmt.Errorf("%w: %s", errHTTPStatus, resp.Status)
	}
	return resp.Close, nil
}

// wrkThreads is the most threads a wrk run gets: the machine this benchmark
// was written for has 2 CPUs, which the servers need too.
const wrkThreads = 2

// wrkSeconds is the length of a wrk run for rows of dur: dur rounded up to
// whole seconds, since wrk takes no fraction.
func wrkSeconds(dur time.Duration) int {
	return max(int((dur+time.Second-1)/time.Second), 1)
}

// wrkArgs are wrk's arguments for a row: conc connections over at most
// wrkThreads threads (wrk needs at least one connection per thread), for
// wrkSeconds(dur).
func wrkArgs(mode, addr string, conc int, dur time.Duration) []string {
	args := []string{
		"-t" + strconv.Itoa(min(wrkThreads, conc)), "-c" + strconv.Itoa(conc),
		"-d" + strconv.Itoa(wrkSeconds(dur)) + "s", "--latency",
	}
	if mode == "http-conn" {
		args = append(args, "-H", "Connection: close")
	}
	return append(args, "http://"+addr+httpPath)
}

// wrkSlack bounds, with the row's duration, a wrk run: more than the
// second that rounding up may add, for wrk to start, connect and report.
const wrkSlack = 10 * time.Second

// runWrk runs wrk at path for one row, and returns what it reports. An
// error means that wrk could not run or that its report could not be read;
// failed requests are counted in the result.
func runWrk(ctx context.Context, path, mode, addr string, conc int, dur time.Duration) (loadResult, error) {
	args := wrkArgs(mode, addr, conc, dur)
	ctx, cancel := context.WithTimeout(ctx, dur+wrkSlack)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("%s %s: %w\n%s", path, strings.Join(args, " "), err, out)
	}
	res, err := parseWrk(string(out))
	if err != nil {
		return loadResult{}, fmt.Errorf("%s %s: %w\n%s", path, strings.Join(args, " "), err, out)
	}
	return res, nil
}

var (
	// "  123456 requests in 2.00s, 12.34MB read"
	wrkTotalRE = regexp.MustCompile(`(?m)^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),`)
	// "     50%  123.45us" in the latency distribution
	wrkPercentileRE = regexp.MustCompile(`(?m)^\s*(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$`)
	// "  Socket errors: connect 0, read 2, write 0, timeout 0"
	wrkSocketErrorsRE = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	// "  Non-2xx or 3xx responses: 5"
	wrkStatusErrorsRE = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// wrkUnits are the units of wrk's times.
var wrkUnits = map[string]time.Duration{
	"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour,
}

func wrkDuration(num, unit string) (time.Duration, error) {
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, err
	}
	return time.Duration(v * float64(wrkUnits[unit])), nil
}

// parseWrk reads wrk's report, run with --latency. Its requests are the
// responses wrk read whole, less those whose status was not 2xx or 3xx;
// its errors are those and its socket errors. Its elapsed time is wrk's own
// measure of the run. wrk reports its percentiles with two decimals, and no
// latencies of its own.
func parseWrk(out string) (loadResult, error) {
	var res loadResult
	m := wrkTotalRE.FindStringSubmatch(out)
	if m == nil {
		return res, errors.New("no \"N requests in T\" line in wrk's report")
	}
	total, _ := strconv.Atoi(m[1])
	elapsed, err := wrkDuration(m[2], m[3])
	if err != nil {
		return res, err
	}
	res.elapsed = elapsed
	found := 0
	for _, p := range wrkPercentileRE.FindAllStringSubmatch(out, -1) {
		d, err := wrkDuration(p[2], p[3])
		if err != nil {
			return res, err
		}
		if p[1] == "50" {
			res.p50 = d
		} else {
			res.p99 = d
		}
		found++
	}
	if found != 2 {
		return res, errors.New("no 50% and 99% latencies in wrk's report (run without --latency?)")
	}
	if m := wrkSocketErrorsRE.FindStringSubmatch(out); m != nil {
		var kinds []string
		for i, kind := range []string{"connect", "read", "write", "timeout"} {
			n, _ := strconv.Atoi(m[i+1])
			res.errors += n
			if n > 0 {
				kinds = append(kinds, fmt.Sprintf("%s %d", kind, n))
			}
		}
		if len(kinds) > 0 {
			res.firstErr = errors.New("wrk socket errors: " + strings.Join(kinds, ", "))
		}
	}
	if m := wrkStatusErrorsRE.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		total -= n
		res.errors += n
		if res.firstErr == nil {
			res.firstErr = fmt.Errorf("wrk: %d responses with a status other than 2xx or 3xx", n)
		}
	}
	res.requests = max(total, 0)
	return res, nil
}
