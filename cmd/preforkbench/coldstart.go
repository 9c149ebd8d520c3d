//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"sync"
	"time"
)

const (
	// coldStartOnes is how many times a single copy is timed; the
	// figure is the median.
	coldStartOnes = 7
	// coldStartBursts is how many times burstClients copies are timed
	// together; the figure is the median.
	coldStartBursts = 3
	// coldStartTimeout bounds each timing, copies that hang included.
	coldStartTimeout = 10 * time.Second
	// helloLine is what the hello program prints.
	helloLine = "hello\n"
)

// coldStartResult is the reference for the prefork server's start-up times:
// how long a small static Go program that uses none of the library takes to
// run its main, alone and in a crowd.
type coldStartResult struct {
	oneMs        float64   // median of oneSamplesMs
	oneSamplesMs []float64 // one copy, started alone
	burstMs      float64   // burstClients copies started at once, until the last printed
}

// coldStarts times the hello program at bin, which prints a line and exits:
// one copy at a time, then burstClients copies at once, as many as the
// burst's clients.
func coldStarts(ctx context.Context, bin string) (coldStartResult, error) {
	var res coldStartResult
	for range coldStartOnes {
		took, err := startCopies(ctx, bin, 1)
		if err != nil {
			return res, err
		}
		res.oneSamplesMs = append(res.oneSamplesMs, millis(took))
	}
	res.oneMs = median(res.oneSamplesMs)
	var bursts []float64
	for range coldStartBursts {
		took, err := startCopies(ctx, bin, burstClients)
		if err != nil {
			return res, err
		}
		bursts = append(bursts, millis(took))
	}
	res.burstMs = median(bursts)
	return res, nil
}

// startCopies starts n copies of bin from n goroutines released together,
// and returns the time from just before the release until the last copy
// printed its line.
func startCopies(ctx context.Context, bin string, n int) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, coldStartTimeout)
	defer cancel()
	took, errs := together(n, func(_ int, start time.Time) (time.Duration, error) {
		return startCopy(ctx, bin, start)
	})
	var last time.Duration
	for i := range n {
		if errs[i] != nil {
			return 0, errs[i]
		}
		last = max(last, took[i])
	}
	return last, nil
}

// together runs f(i, start) for i from 0 to n-1 on n goroutines released
// at once, start being the moment of the release, and returns what each
// call returned.
func together(n int, f func(i int, start time.Time) (time.Duration, error)) ([]time.Duration, []error) {
	took := make([]time.Duration, n)
	errs := make([]error, n)
	release := make(chan struct{})
	var start time.Time
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-release // start is set before release is closed
			took[i], errs[i] = f(i, start)
		})
	}
	start = time.Now()
	close(release)
	wg.Wait()
	return took, errs
}

// startCopy runs bin, and returns the time from start until its line came
// through its standard output. ctx's end kills the copy.
func startCopy(ctx context.Context, bin string, start time.Time) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, bin)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	line, readErr := bufio.NewReader(out).ReadString('\n')
	took := time.Since(start)
	// Wait only after the read: it closes the pipe.
	waitErr := cmd.Wait()
	switch {
	case readErr != nil:
		return 0, fmt.Errorf("cold start of %s: %w", bin, readErr)
	case waitErr != nil:
		return 0, fmt.Errorf("cold start of %s: %w", bin, waitErr)
	case line != helloLine:
		return 0, fmt.Errorf("cold start of %s: printed %q, want %q", bin, line, helloLine)
	}
	return took, nil
}
