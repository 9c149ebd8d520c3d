package sys

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSetTimerSlack(t *testing.T) {
	type result struct {
		slack    time.Duration
		set, get error
	}
	ch := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		var r result
		r.set = SetTimerSlack(time.Millisecond)
		r.slack, r.get = TimerSlack()
		ch <- r
	}()
	r := <-ch
	require.NoError(t, r.set)
	require.NoError(t, r.get)
	assert.Equal(t, time.Millisecond, r.slack)
}
