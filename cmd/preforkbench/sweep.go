//go:build linux

package main

import (
	"context"
	"fmt"
)

// sweepSizes are the fixed pools of the sweep: p.Min children, twice that,
// four times that, and so on while below p.Max, and then p.Max.
func sweepSizes(p pool) []int {
	var sizes []int
	for n := p.Min; n < p.Max; n *= 2 {
		sizes = append(sizes, n)
	}
	return append(sizes, p.Max)
}

// fixedPool is a pool of exactly n children. The spare bounds can change
// nothing when the pool can neither grow nor shrink; these are merely valid.
func fixedPool(n int) pool {
	return pool{Min: n, Max: n, MinSpare: 1, MaxSpare: n}
}

// sweep measures a fixed pool of each of sweepSizes at the concurrency of
// each tcp-conn row, and adds to each such row the fixed pools' figures and
// the ratios of our pool to the best of them. Each fixed pool runs all its
// rows, then stops before the next starts.
func sweep(ctx context.Context, cfg config, echoBin, dir string, rows []row) error {
	for _, n := range sweepSizes(cfg.Pool) {
		if err := sweepPool(ctx, cfg, echoBin, dir, n, rows); err != nil {
			return err
		}
	}
	for i := range rows {
		compareToFixed(&rows[i])
	}
	return nil
}

// sweepPool measures the fixed pool of n children for each tcp-conn row.
func sweepPool(ctx context.Context, cfg config, echoBin, dir string, n int, rows []row) error {
	name := fmt.Sprintf("fixed-%d", n)
	s, err := startPrefork(ctx, cfg, echoBin, dir, "prefork-"+name, "tcp", fixedPool(n))
	if err != nil {
		return err
	}
	defer s.stop()
	for i := range rows {
		r := &rows[i]
		if r.Mode != "tcp-conn" {
			continue
		}
		f, err := measureRow(ctx, cfg, r.Mode, r.Client, r.Concurrency, s.pid, s.addr, true)
		if err != nil {
			return err
		}
		progressRow(*r, name, f)
		r.Fixed = append(r.Fixed, fixedRun{Servers: n, Figures: f})
	}
	return nil
}

// compareToFixed sets r's best fixed pool and the ratios of r's prefork
// figures to that pool's.
func compareToFixed(r *row) {
	best := bestFixed(r.Fixed)
	if best < 0 {
		return
	}
	r.BestFixed = r.Fixed[best].Servers
	r.RPSRatioBestFixed = ratio(r.Prefork.RPS, r.Fixed[best].Figures.RPS)
	r.P99RatioBestFixed = ratio(r.Prefork.P99Us, r.Fixed[best].Figures.P99Us)
}

// bestFixed is the index of the fixed pool that served the most requests/s,
// or -1 if there is none.
func bestFixed(fixed []fixedRun) int {
	best := -1
	for i, f := range fixed {
		if best < 0 || f.Figures.RPS > fixed[best].Figures.RPS {
			best = i
		}
	}
	return best
}
