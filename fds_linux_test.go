package prefork_test

import "syscall"

// limitFDs lowers the process's limit of open descriptors to n.
func limitFDs(n int) error {
	limit := syscall.Rlimit{Cur: uint64(n), Max: uint64(n)}
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit)
}
