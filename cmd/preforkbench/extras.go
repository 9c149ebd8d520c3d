//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"syscall"
	"time"
)

const (
	burstClients = 30
	burstHold    = 3 * time.Second
	// burstTimeout bounds each burst client's wait for its echo.
	burstTimeout = 10 * time.Second
	// burstSample is how often the burst counts the server's children.
	// The clients hold their connections for burstHold, so the peak
	// lasts: counting more often only took CPU from the start-ups that
	// the burst times.
	burstSample = 50 * time.Millisecond
	idleWait    = time.Second
)

var (
	burstPool = pool{Min: 5, Max: 40, MinSpare: 2, MaxSpare: 10}
	idlePool  = pool{Min: 5, Max: 5, MinSpare: 1, MaxSpare: 5}
)

// startupTime is the time from the master's "listening" log line to its
// "pool ready" line: MinServers children started and ready.
func startupTime(ctx context.Context, s *server) (float64, error) {
	listening, _, err := s.waitLog(ctx, listeningRE, 0, time.Second)
	if err != nil {
		return 0, err
	}
	ready, _, err := s.waitLog(ctx, poolReadyRE, 0, time.Second)
	if err != nil {
		return 0, err
	}
	t0, err := logTime(listening)
	if err != nil {
		return 0, err
	}
	t1, err := logTime(ready)
	if err != nil {
		return 0, err
	}
	return millis(t1.Sub(t0)), nil
}

// replaceTimes kills n idle children of s with SIGKILL, one after the
// other, and returns how long the master took each time to have a new child
// ready: from just before the kill until pollLog reads the next "child
// ready" line (the log's own time= has only millisecond resolution). The
// server must be at rest, so that every child is idle and no other child is
// starting.
func replaceTimes(ctx context.Context, s *server, n int) ([]float64, error) {
	killed := make(map[int]bool)
	var samples []float64
	for range n {
		victim, err := readyChild(s, killed)
		if err != nil {
			return nil, err
		}
		offset, err := s.logSize()
		if err != nil {
			return nil, err
		}
		start := time.Now()
		if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
			return nil, fmt.Errorf("kill child %d: %w", victim, err)
		}
		killed[victim] = true
		ready, err := s.pollLog(ctx, childReadyRE, offset, 10*time.Second)
		if err != nil {
			return nil, err
		}
		samples = append(samples, millis(ready.Sub(start)))
	}
	return samples, nil
}

// readyChild returns a live child of s that its log says is ready, and that
// is not in skip.
func readyChild(s *server, skip map[int]bool) (int, error) {
	kids, err := childStats(s.pid)
	if err != nil {
		return 0, err
	}
	logged, err := readFrom(s.logPath, 0)
	if err != nil {
		return 0, err
	}
	ready := make(map[int]bool)
	for _, m := range childReadyRE.FindAllSubmatch(logged, -1) {
		pid, _ := strconv.Atoi(string(m[1]))
		ready[pid] = true
	}
	for _, k := range kids {
		if k.state != 'Z' && ready[k.pid] && !skip[k.pid] {
			return k.pid, nil
		}
	}
	return 0, fmt.Errorf("%s has no ready child to kill", s.name)
}

type burstResult struct {
	allEchoedMs  float64 // until the last of the clients had its echo
	peakChildren int
	errors       int
}

// burst starts a server of 5 to 40 children, has burstClients clients
// connect to it at once, each send a line, wait for its echo and hold its
// connection for burstHold, and counts the children every burstSample
// meanwhile.
func burst(ctx context.Context, cfg config, echoBin, dir string) (burstResult, error) {
	s, err := startPrefork(ctx, cfg, echoBin, dir, "prefork-burst", "tcp", burstPool)
	if err != nil {
		return burstResult{}, err
	}
	defer s.stop()

	stopSampling := make(chan struct{})
	peak := make(chan int, 1)
	go func() {
		most := 0
		tick := time.NewTicker(burstSample)
		defer tick.Stop()
		limit := time.After(burstTimeout + burstHold + 5*time.Second)
		for {
			if n, err := liveChildren(s.pid); err == nil {
				most = max(most, n)
			}
			select {
			case <-tick.C:
			case <-stopSampling:
				peak <- most
				return
			case <-limit:
				peak <- most
				return
			}
		}
	}()

	echoed, errs := together(burstClients, func(i int, start time.Time) (time.Duration, error) {
		return burstClient(ctx, s.addr, start, i)
	})
	close(stopSampling)

	res := burstResult{peakChildren: <-peak}
	var last time.Duration
	for i := range burstClients {
		if errs[i] != nil {
			res.errors++
			progress("burst client %d: %v", i, errs[i])
			continue
		}
		last = max(last, echoed[i])
	}
	res.allEchoedMs = millis(last)
	return res, ctx.Err()
}

// burstClient connects, sends a line, and returns when its echo came after
// start; then it holds the connection for burstHold.
func burstClient(ctx context.Context, addr string, start time.Time, i int) (time.Duration, error) {
	deadline := start.Add(burstTimeout)
	d := net.Dialer{Deadline: deadline}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(deadline)
	msg := request(nil, i)
	if _, err := conn.Write(msg); err != nil {
		return 0, err
	}
	answer := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, answer); err != nil {
		return 0, err
	}
	took := time.Since(start)
	if string(answer) != string(msg) {
		return 0, errWrongEcho
	}
	// Holding the connection keeps its child busy, so the pool has to grow
	// for every client.
	select {
	case <-time.After(burstHold):
	case <-ctx.Done():
	}
	return took, nil
}

// idleFootprint starts a server of exactly 5 children, lets it idle for
// idleWait after it is ready, and sums its processes' memory.
func idleFootprint(ctx context.Context, cfg config, echoBin, dir string) (treeSample, error) {
	s, err := startPrefork(ctx, cfg, echoBin, dir, "prefork-idle", "tcp", idlePool)
	if err != nil {
		return treeSample{}, err
	}
	defer s.stop()
	select {
	case <-time.After(idleWait):
	case <-ctx.Done():
		return treeSample{}, ctx.Err()
	}
	return sampleTree(s.pid, true)
}
