//go:build unix && !linux

package sys

// FirstUnprivilegedPort is the lowest TCP or UDP port that a process
// without privilege may bind: 1024, the traditional bound, which some
// systems let the administrator move.
func FirstUnprivilegedPort() int { return 1024 }
