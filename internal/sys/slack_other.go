//go:build unix && !linux

package sys

import "time"

// SetTimerSlack does nothing: timer slack is Linux's.
func SetTimerSlack(time.Duration) error { return nil }
