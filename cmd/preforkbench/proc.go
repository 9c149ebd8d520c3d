//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the unit of the times in /proc/PID/stat, sysconf(CLK_TCK):
// 100 on every Linux platform Go supports.
const clockTicks = 100

// procStat is what this program uses of /proc/PID/stat.
type procStat struct {
	pid, ppid      int
	state          byte   // 'Z' for a zombie: exited, not yet reaped
	utime, stime   uint64 // clock ticks of the process itself
	cutime, cstime uint64 // clock ticks of the children it has reaped
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name comes second, in parentheses, and may itself hold
	// spaces and parentheses: the other fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	// f[0] is field 3 of proc(5) (state), so field n is f[n-3].
	num := func(n int) uint64 {
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	return procStat{
		pid:    pid,
		ppid:   int(num(4)),
		state:  f[0][0],
		utime:  num(14),
		stime:  num(15),
		cutime: num(16),
		cstime: num(17),
	}, nil
}

// childStats reads the stat of each child of master, zombies included.
// It finds them in the children files of master's threads, which cost a
// read each; where the kernel has none (CONFIG_PROC_CHILDREN), it scans
// every process on the machine.
func childStats(master int) ([]procStat, error) {
	pids, ok := childPIDs(master)
	if !ok {
		return scanChildStats(master)
	}
	var kids []procStat
	for _, pid := range pids {
		st, err := readStat(pid)
		if err != nil || st.ppid != master {
			continue // it exited and was reaped since the list was read
		}
		kids = append(kids, st)
	}
	return kids, nil
}

// childPIDs lists the children of master from /proc/master/task/*/children
// (a child belongs to the thread that started it); ok is false where the
// kernel does not provide those files.
func childPIDs(master int) (pids []int, ok bool) {
	dir := "/proc/" + strconv.Itoa(master) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil, false
	}
	seen := make(map[int]bool) // a thread that ends passes its children on
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/children")
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if _, statErr := os.Stat(dir + "/" + t.Name()); statErr == nil {
				return nil, false // the thread is there, its children file is not
			}
			continue // the thread has ended
		case err != nil:
			return nil, false
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids, true
}

// scanChildStats scans /proc for the children of master, zombies included.
func scanChildStats(master int) ([]procStat, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var kids []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a process
		}
		st, err := readStat(pid)
		if err != nil {
			continue // it exited since the directory was read
		}
		if st.ppid == master {
			kids = append(kids, st)
		}
	}
	return kids, nil
}

// liveChildren counts the children of master that have not exited.
func liveChildren(master int) (int, error) {
	kids, err := childStats(master)
	n := 0
	for _, k := range kids {
		if k.state != 'Z' {
			n++
		}
	}
	return n, err
}

// childWatchEvery is how often a childWatch counts a master's children.
// Each count reads a file per thread of the master and one per child, and
// the load and the server under test need the CPUs: 20 counts a second see
// a pool that grows for a burst and do not cost much.
const childWatchEvery = 50 * time.Millisecond

// childWatch counts the live children of a master every childWatchEvery,
// and keeps the largest count.
type childWatch struct {
	done chan struct{}
	peak chan int
}

// watchChildren starts counting the children of master until stop.
func watchChildren(master int) *childWatch {
	w := &childWatch{done: make(chan struct{}), peak: make(chan int, 1)}
	go func() {
		most := 0
		tick := time.NewTicker(childWatchEvery)
		defer tick.Stop()
		for {
			if n, err := liveChildren(master); err == nil {
				most = max(most, n)
			}
			select {
			case <-tick.C:
			case <-w.done:
				w.peak <- most
				return
			}
		}
	}()
	return w
}

// stop ends the counting and returns the largest count. Call it once.
func (w *childWatch) stop() int {
	close(w.done)
	return <-w.peak
}

// treeSample is a server's process tree at one moment.
type treeSample struct {
	ticks          uint64 // CPU time of the tree, reaped children included
	procs          int    // the master and its live children
	rssKiB, pssKiB int64  // summed over procs, if asked for
}

// sampleTree sums the CPU time of master and its children: their own
// utime+stime, plus the master's cutime+cstime, in which a child's whole
// time lands once the master reaps it. The difference of two samples is
// then the tree's CPU time in between, children that came and went
// included. The master is read last, so a child reaped between the two reads
// is counted twice rather than lost (a few ticks at most). With memory, it
// also sums RSS and PSS from /proc/PID/smaps_rollup.
func sampleTree(master int, memory bool) (treeSample, error) {
	kids, err := childStats(master)
	if err != nil {
		return treeSample{}, err
	}
	m, err := readStat(master)
	if err != nil {
		return treeSample{}, fmt.Errorf("server process %d: %w", master, err)
	}
	t := treeSample{ticks: m.utime + m.stime + m.cutime + m.cstime, procs: 1}
	pids := []int{master}
	for _, k := range kids {
		t.ticks += k.utime + k.stime
		if k.state != 'Z' {
			t.procs++
			pids = append(pids, k.pid)
		}
	}
	if memory {
		for _, pid := range pids {
			rss, pss, err := readRollup(pid)
			if err != nil && pid == master {
				return treeSample{}, err
			}
			// A child that exited meanwhile has no memory left to count.
			t.rssKiB += rss
			t.pssKiB += pss
		}
	}
	return t, nil
}

// readRollup returns the Rss and Pss lines of /proc/PID/smaps_rollup, in KiB.
func readRollup(pid int) (rss, pss int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, rest, _ := strings.Cut(line, ":")
		fields := strings.Fields(rest) // "1234 kB"
		if len(fields) == 0 {
			continue
		}
		switch name {
		case "Rss":
			rss, _ = strconv.ParseInt(fields[0], 10, 64)
		case "Pss":
			pss, _ = strconv.ParseInt(fields[0], 10, 64)
		}
	}
	return rss, pss, nil
}
