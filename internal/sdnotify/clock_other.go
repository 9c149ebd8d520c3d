//go:build !linux

package sdnotify

// monotonicUsec: systemd runs on Linux only; elsewhere a reload is
// announced without the time.
func monotonicUsec() (int64, bool) { return 0, false }
