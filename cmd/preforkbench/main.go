//go:build linux

// Command preforkbench measures the prefork echo server (examples/echo)
// against a "ceiling": the same echo protocol served by a plain Go program,
// a goroutine per TCP connection and one goroutine for UDP, without prefork.
// Everything runs on loopback (127.0.0.1) on one machine. Run it from the
// repository root:
//
//	go run ./cmd/preforkbench
//	go run ./cmd/preforkbench -duration 1s -modes tcp-conn,udp -concurrency 1,8 -runs 3
//
// It builds ./examples/echo (static, CGO_ENABLED=0, unless -cgo) into a
// temporary directory and starts it as the prefork server (its own process
// group, -v so that its log tells when each child is ready), and starts the ceiling server by running its own binary
// again with PREFORKBENCH_CEILING=1 in the environment, so that the two
// servers' CPU time and memory are measured apart from the load generator's.
//
// The load generator runs in this process, as goroutines. Modes:
//
//	tcp-conn       connect, write one line, read its echo, close
//	tcp-keepalive  one connection per client, 100 lines each, then reconnect
//	udp            one datagram, wait for it to come back (1s timeout: an error)
//
// Each row (mode × concurrency × server) lasts -duration or -max-requests
// requests, whichever comes first, and reports, for the server:
//
//   - requests/s, and the p50 and p99 latency of one request (tcp-conn: from
//     the connect to the echo; tcp-keepalive and udp: one line or datagram);
//   - errors (failed connects, reads, writes, timeouts, wrong echoes);
//   - CPU time per request of the server's whole process tree: utime+stime of
//     the master and of each live child from /proc/PID/stat, plus the
//     master's cutime+cstime, which holds the children it reaped, taken
//     before and after the row (clock ticks at 100 Hz);
//   - the number of processes in the tree and its summed RSS and PSS (from
//     /proc/PID/smaps_rollup) at the end of the row;
//   - the ratios prefork / ceiling of requests/s and of CPU per request.
//
// Rows run one after the other against the same servers: a pool that one
// row grew shrinks during the next ones (the master retires surplus idle
// children once a second), and that work counts in their CPU time.
//
// It also measures the prefork server alone: the time from its "listening"
// log line to "pool ready" (MinServers children ready); how long the master
// takes to replace a child killed with SIGKILL (from the kill to the log line
// of the new child's readiness, median of 5; the log's clock has 1 ms
// resolution); a burst of 30 clients that connect at once to a pool of 5 to
// 40 children and hold their connections for 3 s (time until all 30 echoes
// came back, peak number of children); and the footprint of an idle pool of
// 5 children.
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

// ceilingEnv, set in the environment, makes this binary run the ceiling
// server instead of the benchmark.
const ceilingEnv = "PREFORKBENCH_CEILING"

var allModes = []string{"tcp-conn", "tcp-keepalive", "udp"}

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
	ServerMaxRequests int           `json:"server_max_requests"`
	ReusePort         bool          `json:"reuse_port"`
	Cgo               bool          `json:"cgo"`
	Extras            bool          `json:"extras"`
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
	flag.IntVar(&cfg.ServerMaxRequests, "server-max-requests", 0, "prefork server's -max-requests (requests a child serves before it is replaced; 0: no limit)")
	flag.BoolVar(&cfg.ReusePort, "reuse-port", false, "run every prefork server with -reuse-port")
	flag.BoolVar(&cfg.Cgo, "cgo", false, "build examples/echo with cgo (default: CGO_ENABLED=0, a static binary)")
	flag.BoolVar(&cfg.Extras, "extras", true, "also measure start-up, child replacement, burst and idle footprint")
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
	return cfg, nil
}

// run builds the echo example, measures cfg.Runs times, and reports.
func run(ctx context.Context, cfg config) error {
	tmp, err := os.MkdirTemp("", "preforkbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	echoBin := filepath.Join(tmp, "echo")
	progress("building examples/echo")
	build := exec.CommandContext(ctx, "go", "build", "-o", echoBin, "./examples/echo")
	build.Dir = cfg.Repo
	if !cfg.Cgo {
		// A static binary maps no C library: each child's footprint is
		// smaller, and that is how a prefork server should be built.
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
	}
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./examples/echo in %s: %w\n%s", cfg.Repo, err, out)
	}

	var runs []runResult
	for i := range cfg.Runs {
		dir := filepath.Join(tmp, fmt.Sprintf("run%d", i+1))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		progress("run %d of %d", i+1, cfg.Runs)
		r, err := runOnce(ctx, cfg, echoBin, dir)
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

// runOnce measures the whole matrix and the extras once, each with servers
// of its own, logging into dir.
func runOnce(ctx context.Context, cfg config, echoBin, dir string) (runResult, error) {
	var res runResult

	ceiling, err := startCeiling(ctx, dir)
	if err != nil {
		return res, err
	}
	defer ceiling.stop()

	// The TCP server also gives the start-up and replacement figures, so it
	// runs even when only udp rows are asked for.
	tcpServer, err := startPrefork(ctx, cfg, echoBin, dir, "prefork-tcp", "tcp", cfg.Pool)
	if err != nil {
		return res, err
	}
	defer tcpServer.stop()
	if cfg.Extras {
		res.Extras = &extras{}
		if res.Extras.StartupMs, err = startupTime(ctx, tcpServer); err != nil {
			return res, err
		}
		// Before any load, so that every child is idle and nothing else starts.
		if res.Extras.ReplaceSamplesMs, err = replaceTimes(ctx, tcpServer, 5); err != nil {
			return res, err
		}
		res.Extras.ReplaceMs = median(res.Extras.ReplaceSamplesMs)
		progress("start to MinServers ready: %.0f ms; replace a killed child: %.1f ms (median of %s ms)",
			res.Extras.StartupMs, res.Extras.ReplaceMs, formatMs(res.Extras.ReplaceSamplesMs))
	}

	// examples/echo serves one network: UDP needs a server of its own.
	var udpServer *server
	if slices.Contains(cfg.Modes, "udp") {
		if udpServer, err = startPrefork(ctx, cfg, echoBin, dir, "prefork-udp", "udp", cfg.Pool); err != nil {
			return res, err
		}
		defer udpServer.stop()
	}

	for _, mode := range cfg.Modes {
		prefork, ceilingAddr := tcpServer, ceiling.addr
		if mode == "udp" {
			prefork, ceilingAddr = udpServer, ceiling.udpAddr
		}
		for _, conc := range cfg.Concurrency {
			r := row{Mode: mode, Concurrency: conc}
			if r.Prefork, err = measureRow(ctx, cfg, mode, conc, prefork.pid, prefork.addr); err != nil {
				return res, err
			}
			progressRow(mode, conc, "prefork", r.Prefork)
			if r.Ceiling, err = measureRow(ctx, cfg, mode, conc, ceiling.pid, ceilingAddr); err != nil {
				return res, err
			}
			progressRow(mode, conc, "ceiling", r.Ceiling)
			r.RPSRatio = ratio(r.Prefork.RPS, r.Ceiling.RPS)
			r.CPUPerReqRatio = ratio(r.Prefork.CPUPerReqUs, r.Ceiling.CPUPerReqUs)
			res.Rows = append(res.Rows, r)
		}
	}

	// The matrix's servers stop before the burst and the idle footprint, so
	// that these see a quiet machine.
	if udpServer != nil {
		udpServer.stop()
	}
	tcpServer.stop()
	ceiling.stop()

	if cfg.Extras {
		b, err := burst(ctx, cfg, echoBin, dir)
		if err != nil {
			return res, err
		}
		res.Extras.BurstAllEchoedMs, res.Extras.BurstPeakChildren, res.Extras.BurstErrors = b.allEchoedMs, b.peakChildren, b.errors
		progress("burst: all echoed in %.0f ms, peak %d children, %d errors", b.allEchoedMs, b.peakChildren, b.errors)

		idle, err := idleFootprint(ctx, cfg, echoBin, dir)
		if err != nil {
			return res, err
		}
		res.Extras.IdleProcs, res.Extras.IdleRSSKiB, res.Extras.IdlePSSKiB = idle.procs, idle.rssKiB, idle.pssKiB
		progress("idle: %d processes, RSS %s MiB, PSS %s MiB", idle.procs, mib(idle.rssKiB), mib(idle.pssKiB))
	}
	return res, nil
}

// measureRow runs one row of load against the server whose master is pid,
// and samples the server's process tree before and after.
func measureRow(ctx context.Context, cfg config, mode string, conc, pid int, addr string) (figures, error) {
	before, err := sampleTree(pid, false)
	if err != nil {
		return figures{}, err
	}
	load := runLoad(ctx, mode, addr, conc, cfg.Duration, cfg.MaxRequests)
	if err := ctx.Err(); err != nil {
		return figures{}, err
	}
	after, err := sampleTree(pid, true)
	if err != nil {
		return figures{}, err
	}

	f := figures{
		Requests: len(load.latencies),
		Errors:   load.errors,
		Seconds:  load.elapsed.Seconds(),
		P50Us:    micros(percentile(load.latencies, 0.50)),
		P99Us:    micros(percentile(load.latencies, 0.99)),
		Procs:    after.procs,
		RSSKiB:   after.rssKiB,
		PSSKiB:   after.pssKiB,
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

func progressRow(mode string, conc int, server string, f figures) {
	msg := fmt.Sprintf("%-13s c=%-3d %s %9.0f req/s, %d errors", mode, conc, server, f.RPS, f.Errors)
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
