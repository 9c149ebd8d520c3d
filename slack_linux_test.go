package prefork_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A child's threads have the timer slack that ChildTimerSlack sets, the
// default, or with a negative setting the one the master inherited.
func TestChildTimerSlack(t *testing.T) {
	t.Parallel()
	own, err := os.ReadFile("/proc/self/timerslack_ns")
	require.NoError(t, err)
	for _, c := range []struct {
		setting time.Duration
		want    string
	}{{0, "500000"}, {-1, strings.TrimSpace(string(own))}, {time.Millisecond, "1000000"}} {
		p := startReady(t, helperConfig{Min: 1, Max: 1, MinSpare: 1, MaxSpare: 1, ChildTimerSlack: c.setting, ReportTimerSlack: true, Quiet: true})
		assert.Equal(t, c.want, p.waitEvent("child", "TimerSlack").Detail, "ChildTimerSlack %v", c.setting)
	}
}
