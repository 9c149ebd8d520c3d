//go:build unix && !linux

package sys

// Queued returns -1: the queue's length is not known here.
func Queued(fd int, network string) int { return -1 }

// CPUTimes are the machine's CPU times; unknown here.
type CPUTimes struct{ Idle, Total uint64 }

// ReadCPUTimes returns ok false: the pool is sized without them here.
func ReadCPUTimes() (t CPUTimes, ok bool) { return t, false }

// Runnable returns ok false: a process's scheduling state is not read here.
func Runnable(pid int) (runnable, ok bool) { return false, false }
