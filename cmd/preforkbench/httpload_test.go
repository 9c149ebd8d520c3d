//go:build linux

package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Reports of wrk 4.1.0, run with --latency.
const (
	wrkOK = `Running 1s test @ http://127.0.0.1:18231/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   183.13us  181.81us   4.03ms   97.98%
    Req/Sec     3.67k   421.07     4.27k    54.55%
  Latency Distribution
     50%  161.00us
     75%  195.00us
     90%  254.00us
     99%    1.69ms
  4013 requests in 1.10s, 532.98KB read
Requests/sec:   3650.47
Transfer/sec:    484.83KB
`
	wrkStatus = `Running 1s test @ http://127.0.0.1:18231/bad
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   154.01us  505.74us   8.12ms   96.64%
    Req/Sec    22.74k     2.36k   25.79k    70.00%
  Latency Distribution
     50%   64.00us
     75%   93.00us
     90%  144.00us
     99%    2.00s
  22578 requests in 1.00s, 2.93MB read
  Non-2xx or 3xx responses: 22000
Requests/sec:  22468.71
Transfer/sec:      2.91MB
`
	wrkSocket = `Running 1s test @ http://127.0.0.1:18233/
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.00us    0.00us   0.00us    -nan%
    Req/Sec     0.00      0.00     0.00      -nan%
  Latency Distribution
     50%    0.00us
     75%    0.00us
     90%    0.00us
     99%    0.00us
  0 requests in 1.10s, 0.00B read
  Socket errors: connect 0, read 12161, write 3, timeout 0
Requests/sec:      0.00
Transfer/sec:       0.00B
`
)

func TestParseWrk(t *testing.T) {
	tests := map[string]struct {
		out      string
		want     loadResult
		errorHas string // in firstErr
	}{
		"ok": {out: wrkOK, want: loadResult{
			requests: 4013, p50: 161 * time.Microsecond, p99: 1690 * time.Microsecond, elapsed: 1100 * time.Millisecond,
		}},
		"bad statuses": {out: wrkStatus, want: loadResult{
			requests: 578, errors: 22000, p50: 64 * time.Microsecond, p99: 2 * time.Second, elapsed: time.Second,
		}, errorHas: "22000 responses"},
		"socket errors": {out: wrkSocket, want: loadResult{
			errors: 12164, elapsed: 1100 * time.Millisecond,
		}, errorHas: "read 12161, write 3"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseWrk(tt.out)
			if err != nil {
				t.Fatal(err)
			}
			firstErr := got.firstErr
			got.firstErr = nil
			if got != tt.want {
				t.Errorf("parseWrk = %+v, want %+v", got, tt.want)
			}
			switch {
			case tt.errorHas == "" && firstErr != nil:
				t.Errorf("firstErr = %v, want none", firstErr)
			case tt.errorHas != "" && (firstErr == nil || !strings.Contains(firstErr.Error(), tt.errorHas)):
				t.Errorf("firstErr = %v, want one with %q", firstErr, tt.errorHas)
			}
		})
	}
}

func TestParseWrkWithoutLatency(t *testing.T) {
	out := strings.Replace(wrkOK, "  Latency Distribution\n", "", 1)
	out = out[:strings.Index(out, "     50%")] + out[strings.Index(out, "  4013 requests"):]
	if _, err := parseWrk(out); err == nil {
		t.Error("parseWrk of a report without percentiles: no error")
	}
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Error("parseWrk of wrk's failure: no error")
	}
}

func TestWrkArgs(t *testing.T) {
	got := strings.Join(wrkArgs("http-conn", "127.0.0.1:80", 1, 1500*time.Millisecond), " ")
	want := `-t1 -c1 -d2s --latency -H Connection: close http://127.0.0.1:80/`
	if got != want {
		t.Errorf("wrkArgs = %q, want %q", got, want)
	}
	got = strings.Join(wrkArgs("http-keepalive", "127.0.0.1:80", 32, 200*time.Millisecond), " ")
	want = `-t2 -c32 -d1s --latency http://127.0.0.1:80/`
	if got != want {
		t.Errorf("wrkArgs = %q, want %q", got, want)
	}
}

// countingServer serves handler and counts the connections it accepted.
func countingServer(t *testing.T, handler http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(handler)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// The HTTP clients stop at the row's request budget, count whole 200
// responses, and use the connections their mode says.
func TestHTTPClients(t *testing.T) {
	const clients, requests = 3, 60
	tests := map[string]struct {
		mode      string
		wantConns int64
	}{
		"keep-alive":           {"http-keepalive", clients},
		"connection per query": {"http-conn", requests},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
				if r.Close != (tt.mode == "http-conn") {
					http.Error(w, "wrong Connection header", http.StatusBadRequest)
					return
				}
				w.Write([]byte("hello, world\n"))
			})
			addr := srv.Listener.Addr().String()
			res := runLoad(context.Background(), tt.mode, addr, clients, 10*time.Second, requests)
			if res.requests != requests || res.errors != 0 {
				t.Fatalf("%d requests and %d errors (%v), want %d and 0", res.requests, res.errors, res.firstErr, requests)
			}
			if res.p50 <= 0 || res.p99 < res.p50 {
				t.Errorf("p50 %v, p99 %v", res.p50, res.p99)
			}
			if got := conns.Load(); got != tt.wantConns {
				t.Errorf("%d connections, want %d", got, tt.wantConns)
			}
		})
	}
}

// A response other than 200 is an error, on a connection that stays open;
// a keep-alive client opens a new connection when the server closes its
// own.
func TestHTTPClientErrors(t *testing.T) {
	var n atomic.Int64
	srv, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 4 {
		case 0:
			http.Error(w, "no", http.StatusInternalServerError)
		case 1:
			w.Header().Set("Connection", "close")
		}
		w.Write([]byte("hello, world\n"))
	})
	res := runLoad(context.Background(), "http-keepalive", srv.Listener.Addr().String(), 1, 10*time.Second, 20)
	if res.requests != 15 || res.errors != 5 {
		t.Fatalf("%d requests and %d errors, want 15 and 5", res.requests, res.errors)
	}
	if !strings.Contains(res.firstErr.Error(), "500") {
		t.Errorf("error %v, want one about the status 500", res.firstErr)
	}
	if got := conns.Load(); got != 6 {
		t.Errorf("%d connections, want 6 (one, and one more after each Connection: close)", got)
	}
}
