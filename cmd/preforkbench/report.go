//go:build linux

package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
)

// report is what is printed and written as JSON: the medians over the runs,
// and each run's own figures.
type report struct {
	Config config      `json:"config"`
	Rows   []row       `json:"rows"`
	Extras *extras     `json:"extras,omitempty"`
	Runs   []runResult `json:"runs"`
}

// runResult is one measurement of everything.
type runResult struct {
	Rows   []row   `json:"rows"`
	Extras *extras `json:"extras,omitempty"`
}

// row is one mode and concurrency, against both servers.
type row struct {
	Mode           string  `json:"mode"`
	Concurrency    int     `json:"concurrency"`
	Prefork        figures `json:"prefork"`
	Ceiling        figures `json:"ceiling"`
	RPSRatio       float64 `json:"rps_ratio"`         // prefork / ceiling
	CPUPerReqRatio float64 `json:"cpu_per_req_ratio"` // prefork / ceiling
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
		rep.Rows = append(rep.Rows, row{
			Mode:           rows[0].Mode,
			Concurrency:    rows[0].Concurrency,
			Prefork:        medianFigures(rows, func(r row) figures { return r.Prefork }),
			Ceiling:        medianFigures(rows, func(r row) figures { return r.Ceiling }),
			RPSRatio:       m(func(r row) float64 { return r.RPSRatio }),
			CPUPerReqRatio: m(func(r row) float64 { return r.CPUPerReqRatio }),
		})
	}
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
	fmt.Fprintf(w, "prefork: examples/echo -min-servers %d -max-servers %d -min-spare-servers %d -max-spare-servers %d",
		cfg.Pool.Min, cfg.Pool.Max, cfg.Pool.MinSpare, cfg.Pool.MaxSpare)
	if cfg.ServerMaxRequests > 0 {
		fmt.Fprintf(w, " -max-requests %d", cfg.ServerMaxRequests)
	}
	if cfg.ReusePort {
		fmt.Fprintf(w, " -reuse-port")
	}
	fmt.Fprintf(w, "\nceiling: goroutine per connection, no prefork\n\n")

	const rowFormat = "%-13s %4s  %-7s %9s %8s %8s %7s %10s %5s %8s %8s\n"
	fmt.Fprintf(w, rowFormat, "mode", "conc", "server", "req/s", "p50 us", "p99 us", "errors", "cpu us/req", "procs", "RSS MiB", "PSS MiB")
	fmt.Fprintln(w, strings.Repeat("-", 98))
	for _, r := range rep.Rows {
		for _, s := range []struct {
			name string
			f    figures
		}{{"prefork", r.Prefork}, {"ceiling", r.Ceiling}} {
			f := s.f
			fmt.Fprintf(w, rowFormat, r.Mode, fmt.Sprint(r.Concurrency), s.name,
				fmt.Sprintf("%.0f", f.RPS), fmt.Sprintf("%.0f", f.P50Us), fmt.Sprintf("%.0f", f.P99Us),
				fmt.Sprint(f.Errors), orDash(f.CPUPerReqUs, "%.1f"), fmt.Sprint(f.Procs),
				mib(f.RSSKiB), mib(f.PSSKiB))
		}
	}

	fmt.Fprintf(w, "\nprefork / ceiling, same run\n")
	const ratioFormat = "%-13s %4s  %7s %9s\n"
	fmt.Fprintf(w, ratioFormat, "mode", "conc", "req/s", "cpu/req")
	fmt.Fprintln(w, strings.Repeat("-", 36))
	for _, r := range rep.Rows {
		fmt.Fprintf(w, ratioFormat, r.Mode, fmt.Sprint(r.Concurrency),
			orDash(r.RPSRatio, "%.2f"), orDash(r.CPUPerReqRatio, "%.2f"))
	}

	if e := rep.Extras; e != nil {
		fmt.Fprintf(w, "\nprefork server alone\n")
		fmt.Fprintf(w, "%-52s %8.0f ms\n", fmt.Sprintf("start to %d children ready (listening -> pool ready)", cfg.Pool.Min), e.StartupMs)
		fmt.Fprintf(w, "%-52s %8.1f ms\n", "replace a SIGKILLed idle child (median of 5)", e.ReplaceMs)
		fmt.Fprintf(w, "%-52s %8.0f ms\n", fmt.Sprintf("burst: %d clients at once, all echoed after", burstClients), e.BurstAllEchoedMs)
		fmt.Fprintf(w, "%-52s %8d (errors: %d)\n",
			fmt.Sprintf("burst: peak children (pool %d..%d)", burstPool.Min, burstPool.Max), e.BurstPeakChildren, e.BurstErrors)
		fmt.Fprintf(w, "%-52s %8d\n", fmt.Sprintf("idle %d children after %v: processes", idlePool.Min, idleWait), e.IdleProcs)
		fmt.Fprintf(w, "%-52s %8s MiB\n", "idle: RSS, summed", mib(e.IdleRSSKiB))
		fmt.Fprintf(w, "%-52s %8s MiB\n", "idle: PSS, summed", mib(e.IdlePSSKiB))
	}
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
