//go:build unix && !linux

package sys

// RSS returns ok false: a process's resident set size is not read here.
func RSS() (bytes int64, ok bool) { return 0, false }
