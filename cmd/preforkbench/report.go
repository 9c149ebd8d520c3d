//go:build linux

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/prefork-go/prefork/cmd/preforkbench/internal/iobackend"
)

// report is what is printed and written as JSON: the medians over the runs,
// and each run's own figures.
type report struct {
	Config  config      `json:"config"`
	Rows    []row       `json:"rows"`
	Targets []target    `json:"targets,omitempty"`
	Extras  *extras     `json:"extras,omitempty"`
	Runs    []runResult `json:"runs"`
}

// runResult is one measurement of everything.
type runResult struct {
	Rows   []row   `json:"rows"`
	Extras *extras `json:"extras,omitempty"`
}

// row is one mode, concurrency and load generator, against both servers.
type row struct {
	Mode           string  `json:"mode"`
	Concurrency    int     `json:"concurrency"`
	Client         string  `json:"client"` // clientOwn or clientWrk
	Prefork        figures `json:"prefork"`
	Ceiling        figures `json:"ceiling"`
	RPSRatio       float64 `json:"rps_ratio"`         // prefork / ceiling
	CPUPerReqRatio float64 `json:"cpu_per_req_ratio"` // prefork / ceiling

	// The sweep's figures, for tcp-conn rows: fixed pools of the same
	// program, and the ratios of Prefork to the one with the most
	// requests/s.
	Fixed             []fixedRun `json:"fixed_pools,omitempty"`
	BestFixed         int        `json:"best_fixed_pool,omitempty"`      // its number of children
	RPSRatioBestFixed float64    `json:"rps_ratio_best_fixed,omitempty"` // prefork / best fixed pool
	P99RatioBestFixed float64    `json:"p99_ratio_best_fixed,omitempty"` // prefork / the same pool
}

// fixedRun is a fixed pool's figures for one row.
type fixedRun struct {
	Servers int     `json:"servers"` // min = max
	Figures figures `json:"figures"`
}

// figures are one server's, for one row.
type figures struct {
	Requests    int     `json:"requests"` // successful ones
	Errors      int     `json:"errors"`
	ErrorSample string  `json:"error_sample,omitempty"` // one of the errors
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	P50Us       float64 `json:"p50_us"`
	P99Us       float64 `json:"p99_us"`
	CPUMs       float64 `json:"cpu_ms"`         // the server tree's, during the row
	CPUPerReqUs float64 `json:"cpu_per_req_us"` // 0 without requests
	Procs       int     `json:"processes"`      // at the end of the row
	RSSKiB      int64   `json:"rss_kib"`
	PSSKiB      int64   `json:"pss_kib"`
	// Children is the size of a prefork server's pool during the row.
	Children *poolSize `json:"children,omitempty"`
}

// poolSize is the number of live children of a master over a row.
type poolSize struct {
	Start int `json:"start"`
	Peak  int `json:"peak"` // of the counts every childWatchEvery, start and end
	End   int `json:"end"`
}

// String is "start/peak/end".
func (p poolSize) String() string {
	return fmt.Sprintf("%d/%d/%d", p.Start, p.Peak, p.End)
}

// extras are the prefork server's own measurements.
type extras struct {
	StartupMs         float64   `json:"start_to_min_servers_ready_ms"`
	ReplaceMs         float64   `json:"replace_killed_child_ms"` // median of the samples
	ReplaceSamplesMs  []float64 `json:"replace_killed_child_samples_ms,omitempty"`
	BurstAllEchoedMs  float64   `json:"burst_all_echoed_ms"`
	BurstPeakChildren int       `json:"burst_peak_children"`
	BurstErrors       int       `json:"burst_errors"`
	IdleProcs         int       `json:"idle_processes"`
	IdleRSSKiB        int64     `json:"idle_rss_kib"`
	IdlePSSKiB        int64     `json:"idle_pss_kib"`

	// The reference: a small static Go program without the library,
	// from its start until it printed a line.
	ColdStart1Ms        float64   `json:"cold_start_1_ms"` // median of the samples
	ColdStart1SamplesMs []float64 `json:"cold_start_1_samples_ms,omitempty"`
	ColdStartBurstMs    float64   `json:"cold_start_30_parallel_ms"`
	// The prefork server against the reference.
	BurstOverColdStart   float64 `json:"burst_all_echoed_over_cold_start_30"`
	ReplaceOverColdStart float64 `json:"replace_over_cold_start_1"`
}

// target is a goal that the issue sets for one HTTP row: prefork's req/s
// at least Want times net/http's in the same run.
type target struct {
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Client      string  `json:"client"`
	Pool        string  `json:"pool"` // of the prefork server, "min..max"
	Want        float64 `json:"want_rps_ratio"`
	Got         float64 `json:"rps_ratio"` // the row's median
	Met         bool    `json:"met"`
}

// httpTargets are the goals, for every client that measured the
// row: kept-alive connections at 8 clients, and the waiting handler at 32
// clients (with a pool of 5..40, the io pool's default).
var httpTargets = []struct {
	mode string
	conc int
	want float64
}{
	{"http-keepalive", 8, 0.8},
	{"http-io", 32, 0.9},
}

// targets checks the goals against the summed-up rows.
func targets(cfg config, rows []row) []target {
	var ts []target
	for _, g := range httpTargets {
		p := cfg.Pool
		if g.mode == "http-io" {
			p = cfg.IOPool
		}
		for _, r := range rows {
			if r.Mode != g.mode || r.Concurrency != g.conc {
				continue
			}
			ts = append(ts, target{
				Mode: r.Mode, Concurrency: r.Concurrency, Client: r.Client,
				Pool: fmt.Sprintf("%d..%d", p.Min, p.Max),
				Want: g.want, Got: r.RPSRatio, Met: r.RPSRatio >= g.want,
			})
		}
	}
	return ts
}

// summarize takes the median of each figure over the runs. The ratios are
// the medians of each run's ratios, which compare servers measured together.
func summarize(cfg config, runs []runResult) report {
	rep := report{Config: cfg, Runs: runs}
	for i := range runs[0].Rows {
		rows := make([]row, len(runs))
		for k, r := range runs {
			rows[k] = r.Rows[i]
		}
		m := func(get func(row) float64) float64 { return medianOf(rows, get) }
		sr := row{
			Mode:           rows[0].Mode,
			Concurrency:    rows[0].Concurrency,
			Client:         rows[0].Client,
			Prefork:        medianFigures(rows, func(r row) figures { return r.Prefork }),
			Ceiling:        medianFigures(rows, func(r row) figures { return r.Ceiling }),
			RPSRatio:       m(func(r row) float64 { return r.RPSRatio }),
			CPUPerReqRatio: m(func(r row) float64 { return r.CPUPerReqRatio }),
		}
		for j, f := range rows[0].Fixed {
			sr.Fixed = append(sr.Fixed, fixedRun{
				Servers: f.Servers,
				Figures: medianFigures(rows, func(r row) figures { return r.Fixed[j].Figures }),
			})
		}
		// The best pool is the one with the best median; each run is
		// compared with its own measurement of that pool, so that the
		// ratios always name the same pool.
		if best := bestFixed(sr.Fixed); best >= 0 {
			sr.BestFixed = sr.Fixed[best].Servers
			sr.RPSRatioBestFixed = m(func(r row) float64 { return ratio(r.Prefork.RPS, r.Fixed[best].Figures.RPS) })
			sr.P99RatioBestFixed = m(func(r row) float64 { return ratio(r.Prefork.P99Us, r.Fixed[best].Figures.P99Us) })
		}
		rep.Rows = append(rep.Rows, sr)
	}
	rep.Targets = targets(cfg, rep.Rows)
	if runs[0].Extras != nil {
		es := make([]extras, len(runs))
		for k, r := range runs {
			es[k] = *r.Extras
		}
		m := func(get func(extras) float64) float64 { return medianOf(es, get) }
		rep.Extras = &extras{
			StartupMs:         m(func(e extras) float64 { return e.StartupMs }),
			ReplaceMs:         m(func(e extras) float64 { return e.ReplaceMs }),
			BurstAllEchoedMs:  m(func(e extras) float64 { return e.BurstAllEchoedMs }),
			BurstPeakChildren: int(m(func(e extras) float64 { return float64(e.BurstPeakChildren) })),
			BurstErrors:       int(m(func(e extras) float64 { return float64(e.BurstErrors) })),
			IdleProcs:         int(m(func(e extras) float64 { return float64(e.IdleProcs) })),
			IdleRSSKiB:        int64(m(func(e extras) float64 { return float64(e.IdleRSSKiB) })),
			IdlePSSKiB:        int64(m(func(e extras) float64 { return float64(e.IdlePSSKiB) })),

			ColdStart1Ms:         m(func(e extras) float64 { return e.ColdStart1Ms }),
			ColdStartBurstMs:     m(func(e extras) float64 { return e.ColdStartBurstMs }),
			BurstOverColdStart:   m(func(e extras) float64 { return e.BurstOverColdStart }),
			ReplaceOverColdStart: m(func(e extras) float64 { return e.ReplaceOverColdStart }),
		}
	}
	return rep
}

func medianFigures(rows []row, get func(row) figures) figures {
	fs := make([]figures, len(rows))
	for i, r := range rows {
		fs[i] = get(r)
	}
	m := func(get func(figures) float64) float64 { return medianOf(fs, get) }
	var children *poolSize
	if fs[0].Children != nil {
		children = &poolSize{
			Start: int(m(func(f figures) float64 { return float64(f.Children.Start) })),
			Peak:  int(m(func(f figures) float64 { return float64(f.Children.Peak) })),
			End:   int(m(func(f figures) float64 { return float64(f.Children.End) })),
		}
	}
	return figures{
		Requests:    int(m(func(f figures) float64 { return float64(f.Requests) })),
		Errors:      int(m(func(f figures) float64 { return float64(f.Errors) })),
		ErrorSample: firstErrorSample(fs),
		Seconds:     m(func(f figures) float64 { return f.Seconds }),
		RPS:         m(func(f figures) float64 { return f.RPS }),
		P50Us:       m(func(f figures) float64 { return f.P50Us }),
		P99Us:       m(func(f figures) float64 { return f.P99Us }),
		CPUMs:       m(func(f figures) float64 { return f.CPUMs }),
		CPUPerReqUs: m(func(f figures) float64 { return f.CPUPerReqUs }),
		Procs:       int(m(func(f figures) float64 { return float64(f.Procs) })),
		RSSKiB:      int64(m(func(f figures) float64 { return float64(f.RSSKiB) })),
		PSSKiB:      int64(m(func(f figures) float64 { return float64(f.PSSKiB) })),
		Children:    children,
	}
}

// firstErrorSample is the first run's error sample, if any run has one.
func firstErrorSample(fs []figures) string {
	for _, f := range fs {
		if f.ErrorSample != "" {
			return f.ErrorSample
		}
	}
	return ""
}

// medianOf is the median of get over xs. The callers convert counts back
// to integers, which rounds the mean of two middle counts down.
func medianOf[T any](xs []T, get func(T) float64) float64 {
	vs := make([]float64, len(xs))
	for i, x := range xs {
		vs[i] = get(x)
	}
	return median(vs)
}

// median of vs; of an even number, the mean of the middle two.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// printReport writes the tables, fixed-width.
func printReport(w io.Writer, rep report) {
	cfg := rep.Config
	fmt.Fprintf(w, "preforkbench: %d CPUs, %s or %d requests per row, ", cfg.CPUs, cfg.Duration, cfg.MaxRequests)
	if cfg.Runs > 1 {
		fmt.Fprintf(w, "median of %d runs\n", cfg.Runs)
	} else {
		fmt.Fprintf(w, "1 run\n")
	}
	if cfg.Extras || cfg.uses("tcp-conn", "tcp-keepalive", "udp") {
		fmt.Fprintf(w, "prefork: examples/echo %s\n", poolFlags(cfg, cfg.Pool))
	}
	if slices.Contains(cfg.Modes, "io") {
		fmt.Fprintf(w, "prefork, io: internal/ioserver %s -timer-slack %v, one backend connection per child\n", poolFlags(cfg, cfg.IOPool), cfg.IOTimerSlack)
		fmt.Fprintf(w, "io backend: a separate process that answers each line after %v (its CPU counts for neither server)\n", iobackend.Delay)
	}
	if cfg.uses("tcp-conn", "tcp-keepalive", "udp", "io") {
		fmt.Fprintf(w, "ceiling: goroutine per connection, no prefork")
		if slices.Contains(cfg.Modes, "io") {
			fmt.Fprintf(w, "; io: one backend connection per client connection")
		}
		fmt.Fprintf(w, "\n")
	}
	if cfg.uses("http-conn", "http-keepalive") {
		fmt.Fprintf(w, "prefork, http-conn and http-keepalive: internal/httpserver %s, preforkhttp.Server, a handler that writes 13 bytes\n", poolFlags(cfg, cfg.Pool))
	}
	if cfg.uses("http-io") {
		fmt.Fprintf(w, "prefork, http-io: internal/httpserver -handler io %s -timer-slack %v, one backend connection per child; it asks the backend, then writes 13 bytes\n", poolFlags(cfg, cfg.IOPool), cfg.IOTimerSlack)
	}
	if slices.ContainsFunc(cfg.Modes, isHTTP) {
		fmt.Fprintf(w, "net/http, the ceiling of the http modes: internal/httpserver -plain, one http.Server, the same handler and timeouts")
		if cfg.uses("http-io") {
			fmt.Fprintf(w, "; http-io: one backend connection per client connection")
		}
		fmt.Fprintf(w, "\n")
		fmt.Fprintf(w, "clients: own = this program, raw HTTP/1.1 on one net.Conn per client, http.ReadResponse")
		if cfg.Wrk != "" {
			fmt.Fprintf(w, "; wrk = %s -t<min(%d,conc)> -c<conc> -d%ds --latency\n", cfg.Wrk, wrkThreads, wrkSeconds(cfg.Duration))
		} else {
			fmt.Fprintf(w, "; wrk: not found or -wrk empty, its rows are skipped\n")
		}
	}
	fmt.Fprintf(w, "\n")

	fmt.Fprintf(w, rowFormat, "mode", "conc", "client", "server", "req/s", "p50 us", "p99 us", "errors", "cpu us/req", "procs", "RSS MiB", "PSS MiB", "children")
	fmt.Fprintln(w, strings.Repeat("-", 121))
	for _, r := range rep.Rows {
		printFigures(w, r, "prefork", r.Prefork)
		printFigures(w, r, ceilingName(r.Mode), r.Ceiling)
	}
	fmt.Fprintf(w, "children: the master's live children at the start of the row / peak (counted every %v) / at the end\n", childWatchEvery)

	fmt.Fprintf(w, "\nprefork / ceiling (net/http for the http modes), same run\n")
	const ratioFormat = "%-14s %4s  %-6s %7s %9s\n"
	fmt.Fprintf(w, ratioFormat, "mode", "conc", "client", "req/s", "cpu/req")
	fmt.Fprintln(w, strings.Repeat("-", 44))
	for _, r := range rep.Rows {
		fmt.Fprintf(w, ratioFormat, r.Mode, fmt.Sprint(r.Concurrency), r.Client,
			orDash(r.RPSRatio, "%.2f"), orDash(r.CPUPerReqRatio, "%.2f"))
	}

	if len(rep.Targets) > 0 {
		fmt.Fprintf(w, "\ntargets: prefork / net/http req/s, same run\n")
		const targetFormat = "%-14s %4s  %-6s %-8s %7s %7s  %s\n"
		fmt.Fprintf(w, targetFormat, "mode", "conc", "client", "pool", "want", "got", "result")
		fmt.Fprintln(w, strings.Repeat("-", 58))
		for _, t := range rep.Targets {
			verdict := "missed"
			if t.Met {
				verdict = "met"
			}
			fmt.Fprintf(w, targetFormat, t.Mode, fmt.Sprint(t.Concurrency), t.Client, t.Pool,
				fmt.Sprintf(">=%.2f", t.Want), orDash(t.Got, "%.2f"), verdict)
		}
	}

	printSweep(w, rep)

	if e := rep.Extras; e != nil {
		fmt.Fprintf(w, "\nprefork server alone\n")
		fmt.Fprintf(w, "%-56s %8.0f ms\n", fmt.Sprintf("start to %d children ready (listening -> pool ready)", cfg.Pool.Min), e.StartupMs)
		fmt.Fprintf(w, "%-56s %8.2f ms\n", "replace a SIGKILLed idle child (median of 5)", e.ReplaceMs)
		fmt.Fprintf(w, "%-56s %8.0f ms\n", fmt.Sprintf("burst: %d clients at once, all echoed after", burstClients), e.BurstAllEchoedMs)
		fmt.Fprintf(w, "%-56s %8d (errors: %d)\n",
			fmt.Sprintf("burst: peak children (pool %d..%d)", burstPool.Min, burstPool.Max), e.BurstPeakChildren, e.BurstErrors)
		fmt.Fprintf(w, "%-56s %8d\n", fmt.Sprintf("idle %d children after %v: processes", idlePool.Min, idleWait), e.IdleProcs)
		fmt.Fprintf(w, "%-56s %8s MiB\n", "idle: RSS, summed", mib(e.IdleRSSKiB))
		fmt.Fprintf(w, "%-56s %8s MiB\n", "idle: PSS, summed", mib(e.IdlePSSKiB))

		fmt.Fprintf(w, "\nreference: a static Go program without the library, start until its first line\n")
		fmt.Fprintf(w, "%-56s %8.2f ms\n", fmt.Sprintf("cold start of 1 (median of %d)", coldStartOnes), e.ColdStart1Ms)
		fmt.Fprintf(w, "%-56s %8.2f ms\n", fmt.Sprintf("cold start of %d in parallel, all printed (median of %d)", burstClients, coldStartBursts), e.ColdStartBurstMs)
		fmt.Fprintf(w, "%-56s %8s\n", fmt.Sprintf("burst all echoed / cold start of %d", burstClients), orDash(e.BurstOverColdStart, "%.2f"))
		fmt.Fprintf(w, "%-56s %8s\n", "replace a killed child / cold start of 1", orDash(e.ReplaceOverColdStart, "%.2f"))
	}
}

// rowFormat is a line of the table of figures: mode, concurrency, client,
// server, then the figures.
const rowFormat = "%-14s %4s  %-6s %-8s %8s %8s %8s %7s %10s %5s %8s %8s %14s\n"

// printFigures writes one server's figures for row r.
func printFigures(w io.Writer, r row, server string, f figures) {
	children := "-"
	if f.Children != nil {
		children = f.Children.String()
	}
	fmt.Fprintf(w, rowFormat, r.Mode, fmt.Sprint(r.Concurrency), r.Client, server,
		fmt.Sprintf("%.0f", f.RPS), fmt.Sprintf("%.0f", f.P50Us), fmt.Sprintf("%.0f", f.P99Us),
		fmt.Sprint(f.Errors), orDash(f.CPUPerReqUs, "%.1f"), fmt.Sprint(f.Procs),
		mib(f.RSSKiB), mib(f.PSSKiB), children)
}

// printSweep writes the fixed pools' figures and our pool's ratios to the
// best of them, if the sweep ran.
func printSweep(w io.Writer, rep report) {
	swept := slices.ContainsFunc(rep.Rows, func(r row) bool { return len(r.Fixed) > 0 })
	if !swept {
		return
	}
	cfg := rep.Config
	fmt.Fprintf(w, "\nfixed pools: examples/echo with -min-servers = -max-servers = N, same run\n")
	fmt.Fprintf(w, rowFormat, "mode", "conc", "client", "server", "req/s", "p50 us", "p99 us", "errors", "cpu us/req", "procs", "RSS MiB", "PSS MiB", "children")
	fmt.Fprintln(w, strings.Repeat("-", 121))
	for _, r := range rep.Rows {
		for _, f := range r.Fixed {
			printFigures(w, r, fmt.Sprintf("fixed-%d", f.Servers), f.Figures)
		}
	}

	fmt.Fprintf(w, "\nprefork (pool %d..%d) / the fixed pool with the most req/s, same run\n", cfg.Pool.Min, cfg.Pool.Max)
	const format = "%-14s %4s  %-10s %7s %7s\n"
	fmt.Fprintf(w, format, "mode", "conc", "best pool", "req/s", "p99")
	fmt.Fprintln(w, strings.Repeat("-", 46))
	for _, r := range rep.Rows {
		if len(r.Fixed) == 0 {
			continue
		}
		fmt.Fprintf(w, format, r.Mode, fmt.Sprint(r.Concurrency), fmt.Sprintf("fixed-%d", r.BestFixed),
			orDash(r.RPSRatioBestFixed, "%.2f"), orDash(r.P99RatioBestFixed, "%.2f"))
	}
}

// ceilingName is what the table calls the ceiling of mode's rows.
func ceilingName(mode string) string {
	if isHTTP(mode) {
		return "net/http"
	}
	return "ceiling"
}

// poolFlags are the flags that size a prefork server with pool p.
func poolFlags(cfg config, p pool) string {
	s := fmt.Sprintf("-min-servers %d -max-servers %d -min-spare-servers %d -max-spare-servers %d",
		p.Min, p.Max, p.MinSpare, p.MaxSpare)
	if cfg.ServerMaxRequests > 0 {
		s += fmt.Sprintf(" -max-requests %d", cfg.ServerMaxRequests)
	}
	if cfg.ReusePort {
		s += " -reuse-port"
	}
	return s
}

// orDash formats v, or "-" for 0, which stands for "not measurable" (a ratio
// to a server that served nothing, CPU per request without requests).
func orDash(v float64, format string) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf(format, v)
}

func mib(kib int64) string { return fmt.Sprintf("%.1f", float64(kib)/1024) }
