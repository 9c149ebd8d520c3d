//go:build linux

// Command preforkbench measures the prefork echo server (examples/echo)
// against a "ceiling": the same echo protocol served by a plain Go program,
// a goroutine per TCP connection and one goroutine for UDP, without prefork.
// Everything runs on loopback (127.0.0.1) on one machine. Run it from the
// repository root:
//
//	go run ./cmd/preforkbench
//	go run ./cmd/preforkbench -duration 1s -modes tcp-conn,udp -concurrency 1,8 -runs 3
//	go run ./cmd/preforkbench -modes tcp-conn,io -concurrency 8,32 -duration 2s
//	go run ./cmd/preforkbench -modes http-conn,http-keepalive,http-io -runs 3 -extras=false -sweep=false
//
// It builds ./examples/echo (static, CGO_ENABLED=0, unless -cgo) into a
// temporary directory and starts it as the prefork server (its own process
// group, -v so that its log tells when each child is ready), and starts the
// ceiling server by running its own binary again with PREFORKBENCH_CEILING=1
// in the environment, so that the two servers' CPU time and memory are
// measured apart from the load generator's.
//
// The load generator runs in this process, as goroutines. Modes:
//
//	tcp-conn       connect, write one line, read its echo, close
//	tcp-keepalive  one connection per client, 100 lines each, then reconnect
//	udp            one datagram, wait for it to come back (1s timeout: an error)
//	io             as tcp-keepalive, against a server whose handler waits on
//	               a database for each line
//	http-conn      HTTP/1.1: connect, GET with "Connection: close", read the
//	               response, close
//	http-keepalive HTTP/1.1: one connection per client, kept alive for the
//	               whole row
//	http-io        as http-keepalive, against a handler that waits on a
//	               database for each request
//
// The io mode is the common real case of a handler that waits for a
// database. Its backend is a database stand-in: this binary again, with
// PREFORKBENCH_BACKEND=1, a goroutine per connection, that answers each line
// with the same line 10 ms later; its CPU time counts for neither server.
// The prefork server of the io mode is internal/ioserver (built like the
// echo, with the same flags and -backend): each child holds one TCP
// connection to the backend for its whole life, and for each line of its
// client asks the backend and writes the answer back. Its pool has flags of
// its own, -io-min-servers and so on (default 5 to 40 children, 2 to 10
// spare), and the -min-servers flags do not apply to it; -io-timer-slack
// sets its children's Manager.ChildTimerSlack. The ceiling serves
// the io mode on a port of its own, a goroutine per client connection, each
// with a backend connection of its own, opened when the client connection
// starts. The figure that matters is 32 clients (-concurrency 32, in the
// default set): more clients than the pool's MinServers, each holding a
// child for about a second.
//
// The HTTP modes compare a prefork pool of preforkhttp.Servers with a plain
// net/http http.Server that serves the same handler: both are
// internal/httpserver (built like the echo), the pool by default and the
// plain server with -plain, which is the ceiling of these modes. Their
// handler writes a 13-byte body; http-io's first asks the io mode's backend,
// holding its backend connections as the io mode's servers do (one per
// child process; under net/http, one per client connection). http-conn and
// http-keepalive use the pool flags of the other modes, http-io the io
// mode's, and -io-timer-slack. Each HTTP row runs twice, once per load
// generator (the "client" column): this program's own client, which writes
// the request on a net.Conn and reads the response with http.ReadResponse,
// and wrk (-wrk; wrk -t1 or -t2 -cN -dS --latency, with -duration rounded
// up to whole seconds, its requests bounded by time only), a separate
// process whose CPU time counts for neither server. If wrk is not found,
// its rows are skipped and the report says so.
//
// Each row (mode × concurrency × client × server) lasts -duration or
// -max-requests requests, whichever comes first (wrk: -duration only), and
// reports, for the server:
//
//   - requests/s, and the p50 and p99 latency of one request (tcp-conn: from
//     the connect to the echo; tcp-keepalive, io and udp: one line or
//     datagram; http-conn: from the connect to the end of the response;
//     http-keepalive and http-io: one request and its response; wrk: its
//     own percentiles);
//   - errors (failed connects, reads, writes, timeouts, wrong echoes, HTTP
//     statuses other than 200; wrk: its socket errors and non-2xx/3xx
//     responses);
//   - CPU time per request of the server's whole process tree: utime+stime of
//     the master and of each live child from /proc/PID/stat, plus the
//     master's cutime+cstime, which holds the children it reaped, taken
//     before and after the row (clock ticks at 100 Hz);
//   - the number of processes in the tree and its summed RSS and PSS (from
//     /proc/PID/smaps_rollup) at the end of the row;
//   - for a prefork server, the size of the pool: the master's live children
//     at the start of the row, the most of them during it (this process
//     counts them every 50 ms by reading /proc), and at the end;
//   - the ratios prefork / ceiling of requests/s and of CPU per request;
//     for two of them, the HTTP modes have targets, which the report
//     checks: at least 0.8 for http-keepalive at 8 clients and 0.9 for
//     http-io at 32 clients with a pool of 5 to 40.
//
// Rows run one after the other against the same servers: a pool that one
// row grew shrinks during the next ones (the master retires surplus idle
// children once a second), and that work counts in their CPU time.
//
// With -sweep (the default), the tcp-conn rows are also measured against
// examples/echo with fixed pools, -min-servers = -max-servers = N, for N =
// -min-servers, twice that, four times that... up to and including
// -max-servers: each fixed pool starts once, after the other servers have
// stopped, and runs a row of -duration at each concurrency. The report gives
// each fixed pool's figures, and for the growing pool its ratio of
// requests/s to the fixed pool with the most requests/s and its ratio of p99
// latency to that same pool's. -sweep=false skips it.
//
// It also measures the prefork server alone: the time from its "listening"
// log line to "pool ready" (MinServers children ready); how long the master
// takes to replace a child killed with SIGKILL (from the kill until this
// program reads the new child's "child ready" line in the log, which it
// polls every 0.2 ms; median of 5); a burst of 30 clients that connect at
// once to a pool of 5 to 40 children and hold their connections for 3 s
// (time until all 30 echoes came back, peak number of children); and the
// footprint of an idle pool of 5 children. As a reference for the start-up
// figures, it times a small static Go program that uses none of the library
// (internal/hello, which prints a line and exits) from its start until its
// line arrives: one copy alone (median of 7), and 30 copies started at once
// (until the last line; median of 3). It reports the burst's time over the
// cold start of 30, and the replacement's over the cold start of 1.
// -extras=false skips all of this.
//
// The table goes to standard output, progress to standard error, and the same
// figures as JSON to -json. With -runs N the whole set is measured N times
// and each figure is the median of the N. The load generator shares the CPUs
// with the servers, so figures from a small machine are noisy: compare the
// ratios of one run rather than absolute numbers across machines.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	// ceilingEnv, set in the environment, makes this binary run the
	// ceiling server instead of the benchmark.
	ceilingEnv = "PREFORKBENCH_CEILING"
	// backendEnv, set in the environment, makes this binary run the io
	// mode's backend, the database stand-in.
	backendEnv = "PREFORKBENCH_BACKEND"
	// ceilingBackendEnv tells the ceiling the backend's address; without
	// it, the ceiling serves no io protocol.
	ceilingBackendEnv = "PREFORKBENCH_CEILING_BACKEND"
)

var allModes = []string{"tcp-conn", "tcp-keepalive", "udp", "io", "http-conn", "http-keepalive", "http-io"}

// config holds the flags.
type config struct {
	Repo              string        `json:"repo"`
	Duration          time.Duration `json:"-"`
	DurationText      string        `json:"duration"`
	MaxRequests       int           `json:"max_requests"`
	Runs              int           `json:"runs"`
	Modes             []string      `json:"modes"`
	Concurrency       []int         `json:"concurrency"`
	Pool              pool          `json:"pool"`
	IOPool            pool          `json:"io_pool"`
	IOTimerSlack      time.Duration `json:"io_timer_slack_ns"`
	Sweep             bool          `json:"sweep"`
	ServerMaxRequests int           `json:"server_max_requests"`
	ReusePort         bool          `json:"reuse_port"`
	Cgo               bool          `json:"cgo"`
	Extras            bool          `json:"extras"`
	Wrk               string        `json:"wrk"` // the program; empty: no wrk rows
	JSON              string        `json:"-"`
	CPUs              int           `json:"cpus"`
}

// pool is the sizing of a prefork server, as examples/echo's flags.
type pool struct {
	Min      int `json:"min_servers"`
	Max      int `json:"max_servers"`
	MinSpare int `json:"min_spare_servers"`
	MaxSpare int `json:"max_spare_servers"`
}

func main() {
	if os.Getenv(ceilingEnv) == "1" {
		runCeiling()
		return
	}
	if os.Getenv(backendEnv) == "1" {
		runBackend()
		return
	}
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "preforkbench:", err)
		os.Exit(2)
	}
	// SIGINT and SIGTERM cancel ctx: every loop then ends, and the deferred
	// clean-ups of run stop the servers and remove the temporary directory.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = run(ctx, cfg)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "preforkbench:", err)
		os.Exit(1)
	}
}

func parseFlags() (config, error) {
	cfg := config{CPUs: runtime.NumCPU()}
	flag.StringVar(&cfg.Repo, "repo", ".", "root of the prefork repository (holds examples/echo)")
	flag.DurationVar(&cfg.Duration, "duration", 2*time.Second, "length of each row")
	flag.IntVar(&cfg.MaxRequests, "max-requests", 1_000_000, "most requests of each row")
	flag.IntVar(&cfg.Runs, "runs", 1, "times to measure everything; figures are the medians")
	modes := flag.String("modes", strings.Join(allModes, ","), "load modes, comma-separated: "+strings.Join(allModes, ", "))
	conc := flag.String("concurrency", "1,8,32", "numbers of concurrent clients, comma-separated")
	flag.IntVar(&cfg.Pool.Min, "min-servers", 8, "prefork server's -min-servers")
	flag.IntVar(&cfg.Pool.Max, "max-servers", 64, "prefork server's -max-servers")
	flag.IntVar(&cfg.Pool.MinSpare, "min-spare-servers", 4, "prefork server's -min-spare-servers")
	flag.IntVar(&cfg.Pool.MaxSpare, "max-spare-servers", 16, "prefork server's -max-spare-servers")
	flag.IntVar(&cfg.IOPool.Min, "io-min-servers", 5, "io mode: prefork server's -min-servers")
	flag.IntVar(&cfg.IOPool.Max, "io-max-servers", 40, "io mode: prefork server's -max-servers")
	flag.IntVar(&cfg.IOPool.MinSpare, "io-min-spare-servers", 2, "io mode: prefork server's -min-spare-servers")
	flag.IntVar(&cfg.IOPool.MaxSpare, "io-max-spare-servers", 10, "io mode: prefork server's -max-spare-servers")
	flag.DurationVar(&cfg.IOTimerSlack, "io-timer-slack", 0, "io mode: the children's timer slack (Manager.ChildTimerSlack; 0: the default, negative: inherited)")
	flag.BoolVar(&cfg.Sweep, "sweep", true, "tcp-conn: also measure fixed pools of -min-servers, twice that, four times... up to -max-servers children")
	flag.IntVar(&cfg.ServerMaxRequests, "server-max-requests", 0, "prefork server's -max-requests (requests a child serves before it is replaced; 0: no limit)")
	flag.BoolVar(&cfg.ReusePort, "reuse-port", false, "run every prefork server with -reuse-port")
	flag.BoolVar(&cfg.Cgo, "cgo", false, "build examples/echo with cgo (default: CGO_ENABLED=0, a static binary)")
	flag.BoolVar(&cfg.Extras, "extras", true, "also measure start-up, child replacement, cold start of a plain Go program, burst and idle footprint")
	flag.StringVar(&cfg.Wrk, "wrk", "wrk", "HTTP modes: the wrk program, found on PATH if it has no slash (empty: no wrk rows)")
	flag.StringVar(&cfg.JSON, "json", "bench.json", "write the figures as JSON to this file (empty: do not)")
	flag.Parse()
	if flag.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", flag.Args())
	}
	cfg.DurationText = cfg.Duration.String()

	if cfg.Duration <= 0 || cfg.MaxRequests <= 0 || cfg.Runs <= 0 {
		return cfg, errors.New("-duration, -max-requests and -runs must be positive")
	}
	for m := range strings.SplitSeq(*modes, ",") {
		m = strings.TrimSpace(m)
		if !slices.Contains(allModes, m) {
			return cfg, fmt.Errorf("unknown mode %q (want %s)", m, strings.Join(allModes, ", "))
		}
		cfg.Modes = append(cfg.Modes, m)
	}
	for c := range strings.SplitSeq(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		// The bound keeps a typo from opening thousands of sockets.
		if err != nil || n < 1 || n > 1024 {
			return cfg, fmt.Errorf("bad concurrency %q (want 1 to 1024)", c)
		}
		cfg.Concurrency = append(cfg.Concurrency, n)
	}
	if cfg.sweeps() && (cfg.Pool.Min < 1 || cfg.Pool.Max < cfg.Pool.Min) {
		return cfg, errors.New("-sweep needs -min-servers of 1 or more and -max-servers of at least -min-servers (or -sweep=false)")
	}
	return cfg, nil
}

// uses tells whether the run measures any of modes.
func (cfg config) uses(modes ...string) bool {
	return slices.ContainsFunc(cfg.Modes, func(m string) bool { return slices.Contains(modes, m) })
}

// isHTTP tells whether mode is one of the HTTP modes.
func isHTTP(mode string) bool { return strings.HasPrefix(mode, "http-") }

// clients are the load generators of mode's rows: this program's own
// client, and for the HTTP modes wrk, if the run has it.
func (cfg config) clients(mode string) []string {
	if isHTTP(mode) && cfg.Wrk != "" {
		return []string{clientOwn, clientWrk}
	}
	return []string{clientOwn}
}

// sweeps tells whether the run measures fixed pools.
func (cfg config) sweeps() bool {
	return cfg.Sweep && slices.Contains(cfg.Modes, "tcp-conn")
}

// binaries are the programs that run builds for the measurements; a path is
// empty when no measurement of this run needs that program.
type binaries struct {
	echo       string // examples/echo: the prefork server of most modes
	ioServer   string // the prefork server of the io mode
	httpServer string // both servers of the HTTP modes
	hello      string // the program whose cold start is the reference
}

// run builds the programs, measures cfg.Runs times, and reports.
func run(ctx context.Context, cfg config) error {
	tmp, err := os.MkdirTemp("", "preforkbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	// A static binary maps no C library: each child's footprint is
	// smaller, and that is how a prefork server should be built.
	bins := binaries{echo: filepath.Join(tmp, "echo")}
	if err := build(ctx, cfg.Repo, "./examples/echo", bins.echo, cfg.Cgo); err != nil {
		return err
	}
	if slices.Contains(cfg.Modes, "io") {
		bins.ioServer = filepath.Join(tmp, "ioserver")
		if err := build(ctx, cfg.Repo, "./cmd/preforkbench/internal/ioserver", bins.ioServer, cfg.Cgo); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(cfg.Modes, isHTTP) {
		bins.httpServer = filepath.Join(tmp, "httpserver")
		if err := build(ctx, cfg.Repo, "./cmd/preforkbench/internal/httpserver", bins.httpServer, cfg.Cgo); err != nil {
			return err
		}
		if cfg.Wrk != "" {
			path, err := exec.LookPath(cfg.Wrk)
			if err != nil {
				progress("no wrk (%v): the wrk rows are skipped (on Debian: apt-get install wrk)", err)
			}
			cfg.Wrk = path
		}
	} else {
		cfg.Wrk = ""
	}
	if cfg.Extras {
		// The reference is always static: it stands for the least a Go
		// program takes to start.
		bins.hello = filepath.Join(tmp, "hello")
		if err := build(ctx, cfg.Repo, "./cmd/preforkbench/internal/hello", bins.hello, false); err != nil {
			return err
		}
	}

	var runs []runResult
	for i := range cfg.Runs {
		dir := filepath.Join(tmp, fmt.Sprintf("run%d", i+1))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		progress("run %d of %d", i+1, cfg.Runs)
		r, err := runOnce(ctx, cfg, bins, dir)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}

	rep := summarize(cfg, runs)
	printReport(os.Stdout, rep)
	if cfg.JSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); err != nil {
			return err
		}
		progress("wrote %s", cfg.JSON)
	}
	return nil
}

// build runs go build on the package pkg of the repository at repo, with
// cgo only if cgo is set.
func build(ctx context.Context, repo, pkg, out string, cgo bool) error {
	progress("building %s", pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = repo
	if !cgo {
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s in %s: %w\n%s", pkg, repo, err, b)
	}
	return nil
}

// runOnce measures the whole matrix, the fixed pools and the extras once,
// each with servers of its own, logging into dir.
func runOnce(ctx context.Context, cfg config, bins binaries, dir string) (runResult, error) {
	var res runResult

	// The backend of the io and http-io modes starts first and stops
	// last, so that it outlives every server that talks to it.
	var backend *server
	backendAddr := ""
	if cfg.uses("io", "http-io") {
		var err error
		if backend, err = startBackend(ctx, dir); err != nil {
			return res, err
		}
		defer backend.stop()
		backendAddr = backend.addr
	}

	// The ceiling of the echo modes serves the io protocol only if the
	// run has the io mode.
	var ceiling *server
	if cfg.uses("tcp-conn", "tcp-keepalive", "udp", "io") {
		ceilingBackend := ""
		if cfg.uses("io") {
			ceilingBackend = backendAddr
		}
		var err error
		if ceiling, err = startCeiling(ctx, dir, ceilingBackend); err != nil {
			return res, err
		}
		defer ceiling.stop()
	}

	// The TCP server also gives the start-up and replacement figures, so it
	// runs for the extras even when no TCP echo rows are asked for.
	var tcpServer *server
	if cfg.Extras || cfg.uses("tcp-conn", "tcp-keepalive") {
		var err error
		if tcpServer, err = startPrefork(ctx, cfg, bins.echo, dir, "prefork-tcp", "tcp", cfg.Pool); err != nil {
			return res, err
		}
		defer tcpServer.stop()
	}
	if cfg.Extras {
		res.Extras = &extras{}
		var err error
		if res.Extras.StartupMs, err = startupTime(ctx, tcpServer); err != nil {
			return res, err
		}
		// Before any load, so that every child is idle and nothing else starts.
		if res.Extras.ReplaceSamplesMs, err = replaceTimes(ctx, tcpServer, 5); err != nil {
			return res, err
		}
		res.Extras.ReplaceMs = median(res.Extras.ReplaceSamplesMs)
		progress("start to MinServers ready: %.0f ms; replace a killed child: %.2f ms (median of %s ms)",
			res.Extras.StartupMs, res.Extras.ReplaceMs, formatMs(res.Extras.ReplaceSamplesMs))
	}

	// examples/echo serves one network: UDP needs a server of its own, and
	// the io mode another program. The HTTP modes have two of their own
	// for each handler: the pool, and net/http alone.
	var udpServer, ioServer, httpServer, httpIOServer, plainHTTP, plainHTTPIO *server
	var err error
	if cfg.uses("udp") {
		if udpServer, err = startPrefork(ctx, cfg, bins.echo, dir, "prefork-udp", "udp", cfg.Pool); err != nil {
			return res, err
		}
		defer udpServer.stop()
	}
	if cfg.uses("io") {
		if ioServer, err = startIOPrefork(ctx, cfg, bins.ioServer, dir, backendAddr); err != nil {
			return res, err
		}
		defer ioServer.stop()
	}
	if cfg.uses("http-conn", "http-keepalive") {
		if httpServer, err = startHTTPPrefork(ctx, cfg, bins.httpServer, dir, "prefork-http", cfg.Pool, "short", ""); err != nil {
			return res, err
		}
		defer httpServer.stop()
		if plainHTTP, err = startPlainHTTP(ctx, bins.httpServer, dir, "nethttp", "short", ""); err != nil {
			return res, err
		}
		defer plainHTTP.stop()
	}
	if cfg.uses("http-io") {
		if httpIOServer, err = startHTTPPrefork(ctx, cfg, bins.httpServer, dir, "prefork-http-io", cfg.IOPool, "io", backendAddr); err != nil {
			return res, err
		}
		defer httpIOServer.stop()
		if plainHTTPIO, err = startPlainHTTP(ctx, bins.httpServer, dir, "nethttp-io", "io", backendAddr); err != nil {
			return res, err
		}
		defer plainHTTPIO.stop()
	}

	for _, mode := range cfg.Modes {
		var prefork, ceil *server
		var ceilingAddr string
		switch mode {
		case "tcp-conn", "tcp-keepalive":
			prefork, ceil, ceilingAddr = tcpServer, ceiling, ceiling.addr
		case "udp":
			prefork, ceil, ceilingAddr = udpServer, ceiling, ceiling.udpAddr
		case "io":
			prefork, ceil, ceilingAddr = ioServer, ceiling, ceiling.ioAddr
		case "http-conn", "http-keepalive":
			prefork, ceil, ceilingAddr = httpServer, plainHTTP, plainHTTP.addr
		case "http-io":
			prefork, ceil, ceilingAddr = httpIOServer, plainHTTPIO, plainHTTPIO.addr
		}
		for _, conc := range cfg.Concurrency {
			for _, client := range cfg.clients(mode) {
				r := row{Mode: mode, Concurrency: conc, Client: client}
				if r.Prefork, err = measureRow(ctx, cfg, mode, client, conc, prefork.pid, prefork.addr, true); err != nil {
					return res, err
				}
				progressRow(r, "prefork", r.Prefork)
				if r.Ceiling, err = measureRow(ctx, cfg, mode, client, conc, ceil.pid, ceilingAddr, false); err != nil {
					return res, err
				}
				progressRow(r, ceilingName(mode), r.Ceiling)
				r.RPSRatio = ratio(r.Prefork.RPS, r.Ceiling.RPS)
				r.CPUPerReqRatio = ratio(r.Prefork.CPUPerReqUs, r.Ceiling.CPUPerReqUs)
				res.Rows = append(res.Rows, r)
			}
		}
	}

	// The matrix's servers stop before the sweep and the extras, so that
	// these see a quiet machine.
	for _, s := range []*server{udpServer, ioServer, httpServer, httpIOServer, plainHTTP, plainHTTPIO, tcpServer, ceiling, backend} {
		if s != nil {
			s.stop()
		}
	}

	if cfg.sweeps() {
		if err := sweep(ctx, cfg, bins.echo, dir, res.Rows); err != nil {
			return res, err
		}
	}

	if cfg.Extras {
		e := res.Extras
		cold, err := coldStarts(ctx, bins.hello)
		if err != nil {
			return res, err
		}
		e.ColdStart1Ms, e.ColdStart1SamplesMs, e.ColdStartBurstMs = cold.oneMs, cold.oneSamplesMs, cold.burstMs
		progress("cold start of a plain Go program: 1 in %.2f ms (median of %s ms), %d at once in %.2f ms",
			cold.oneMs, formatMs(cold.oneSamplesMs), burstClients, cold.burstMs)

		b, err := burst(ctx, cfg, bins.echo, dir)
		if err != nil {
			return res, err
		}
		e.BurstAllEchoedMs, e.BurstPeakChildren, e.BurstErrors = b.allEchoedMs, b.peakChildren, b.errors
		progress("burst: all echoed in %.0f ms, peak %d children, %d errors", b.allEchoedMs, b.peakChildren, b.errors)
		e.BurstOverColdStart = ratio(e.BurstAllEchoedMs, e.ColdStartBurstMs)
		e.ReplaceOverColdStart = ratio(e.ReplaceMs, e.ColdStart1Ms)

		idle, err := idleFootprint(ctx, cfg, bins.echo, dir)
		if err != nil {
			return res, err
		}
		e.IdleProcs, e.IdleRSSKiB, e.IdlePSSKiB = idle.procs, idle.rssKiB, idle.pssKiB
		progress("idle: %d processes, RSS %s MiB, PSS %s MiB", idle.procs, mib(idle.rssKiB), mib(idle.pssKiB))
	}
	return res, nil
}

// measureRow runs one row of load against the server whose master is pid,
// and samples the server's process tree before and after. For a prefork
// server it also counts the master's children during the row.
func measureRow(ctx context.Context, cfg config, mode, client string, conc, pid int, addr string, prefork bool) (figures, error) {
	before, err := sampleTree(pid, false)
	if err != nil {
		return figures{}, err
	}
	var watch *childWatch
	if prefork {
		watch = watchChildren(pid)
	}
	var load loadResult
	if client == clientWrk {
		load, err = runWrk(ctx, cfg.Wrk, mode, addr, conc, cfg.Duration)
	} else {
		load = runLoad(ctx, mode, addr, conc, cfg.Duration, cfg.MaxRequests)
	}
	peak := 0
	if watch != nil {
		peak = watch.stop()
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return figures{}, err
	}
	after, err := sampleTree(pid, true)
	if err != nil {
		return figures{}, err
	}

	f := figures{
		Requests: load.requests,
		Errors:   load.errors,
		Seconds:  load.elapsed.Seconds(),
		P50Us:    micros(load.p50),
		P99Us:    micros(load.p99),
		Procs:    after.procs,
		RSSKiB:   after.rssKiB,
		PSSKiB:   after.pssKiB,
	}
	if prefork {
		// The tree's samples are the master and its live children.
		start, end := before.procs-1, after.procs-1
		f.Children = &poolSize{Start: start, Peak: max(peak, start, end), End: end}
	}
	if load.firstErr != nil {
		f.ErrorSample = load.firstErr.Error()
	}
	if f.Seconds > 0 {
		f.RPS = float64(f.Requests) / f.Seconds
	}
	// A child that exited between the two samples can make the sum shrink
	// by a tick or so (see sampleTree); never report negative CPU.
	ticks := max(int64(after.ticks)-int64(before.ticks), 0)
	f.CPUMs = float64(ticks) * 1000 / clockTicks
	if f.Requests > 0 {
		f.CPUPerReqUs = f.CPUMs * 1000 / float64(f.Requests)
	}
	return f, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0 // JSON has no NaN or Inf; the table prints 0 as "-"
	}
	return a / b
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func progressRow(r row, server string, f figures) {
	msg := fmt.Sprintf("%-14s c=%-3d %-3s %-8s %9.0f req/s, %d errors", r.Mode, r.Concurrency, r.Client, server, f.RPS, f.Errors)
	if f.Children != nil {
		msg += ", children " + f.Children.String()
	}
	if f.ErrorSample != "" {
		msg += " (one: " + f.ErrorSample + ")"
	}
	progress("%s", msg)
}

func formatMs(ms []float64) string {
	s := make([]string, len(ms))
	for i, v := range ms {
		s[i] = strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strings.Join(s, ", ")
}

// progress reports on standard error, which leaves standard output to the
// table.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "preforkbench: "+format+"\n", args...)
}
