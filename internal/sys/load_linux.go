package sys

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// What the master reads to size the pool: how much work waits in the
// listener's queue, how much of the machine's CPU is idle, and whether a
// busy child is running or asleep. Each costs a system call or a read of a
// small /proc file, and the master reads them only while children are busy.

// Queued returns how many connections wait in a listening socket's accept
// queue, or for a datagram socket 1 if a datagram waits (the kernel counts
// bytes there, not datagrams). It returns -1 where it cannot tell: an
// error, or a kernel without the socket diagnostics of Unix sockets.
func Queued(fd int, network string) int {
	switch {
	case network == "unix":
		return unixQueued(fd)
	case IsPacket(network):
		n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err != nil {
			return -1
		}
		return min(n, 1)
	}
	// On a listening socket, tcpi_unacked is the length of the accept
	// queue (and tcpi_sacked its limit): ss -l shows the same as Recv-Q.
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return -1
	}
	return int(info.Unacked)
}

// CPUTimes are the machine's CPU times since boot, in clock ticks.
type CPUTimes struct{ Idle, Total uint64 }

// ReadCPUTimes reads the machine's CPU times from /proc/stat; ok is false
// where they cannot be read.
func ReadCPUTimes() (t CPUTimes, ok bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return t, false
	}
	defer f.Close()
	var buf [256]byte // the first line, "cpu  user nice system idle iowait ..."
	n, _ := f.Read(buf[:])
	line, _, _ := bytes.Cut(buf[:n], []byte("\n"))
	fields := bytes.Fields(line)
	if len(fields) < 5 || string(fields[0]) != "cpu" {
		return t, false
	}
	for i, field := range fields[1:] {
		v, err := strconv.ParseUint(string(field), 10, 64)
		if err != nil {
			return t, false
		}
		t.Total += v
		if i == 3 || i == 4 { // idle, iowait
			t.Idle += v
		}
	}
	return t, true
}

// Runnable reports whether any thread of process pid is running or waiting
// for a CPU; ok is false where it cannot tell. The process's own state is
// only its first thread's, and a Go program runs its goroutines on any of
// its threads: each one has to be read.
func Runnable(pid int) (runnable, ok bool) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return false, false
	}
	var buf [128]byte
	for _, task := range tasks {
		f, err := os.Open(dir + task.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		n, _ := f.Read(buf[:])
		f.Close()
		// "tid (name) S ...": the name may hold spaces and parentheses.
		i := bytes.LastIndexByte(buf[:n], ')')
		if i >= 0 && i+2 < n && buf[i+2] == 'R' {
			return true, true
		}
	}
	return false, true
}
