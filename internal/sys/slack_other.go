//go:build unix && !linux

package sys

import "time"

// SetTimerSlack does nothing: timer slack is Linux's.
func SetTimerSlack(time.Duration) error { return nil }

// TimerSlack returns 0: there is no timer slack to read here.
func TimerSlack() (time.Duration, error) { return 0, nil }
