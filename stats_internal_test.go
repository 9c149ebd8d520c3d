package prefork

import (
	"log/slog"
	"testing"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/stretchr/testify/assert"
)

// What Stats calls a child, from the master's phase and the board's state.
// A parked child can be busy: it serves the connection the kernel woke it
// for as it was parked, and Stats shows it busy, with its client.
func TestChildState(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		phase phase
		board uint32
		want  ChildState
	}{
		{starting, board.Idle, ChildStarting},
		{serving, board.Idle, ChildIdle},
		{serving, board.Busy, ChildBusy},
		{parked, board.Parked, ChildParked},
		{parked, board.Busy, ChildBusy},
		{leaving, board.Leaving, ChildLeaving},
		{retiring, board.Busy, ChildRetiring},
		{killed, board.Busy, ChildKilled},
	} {
		assert.Equal(t, c.want, (&child{phase: c.phase}).state(c.board), "%v, board %d", c.phase, c.board)
	}
}

// A child that exits before it was ready failed to start, unless the
// master stopped or killed it with the pool: then it is counted as such.
func TestExitReasonOfAChildNotReady(t *testing.T) {
	ms := newMaster(t.Context(), config{logger: slog.New(slog.DiscardHandler)})
	for _, c := range []struct {
		phase  phase
		failed string
		want   ExitReason
	}{
		{starting, "", ExitStartFailed},                           // Initialize failed
		{killed, "not ready after StartTimeout", ExitStartFailed}, // the master's kill, for StartTimeout
		{stopping, "", ExitStopped},                               // the pool stopped while it started
		{killed, "", ExitKilled},                                  // the pool stopped at once
	} {
		assert.Equal(t, c.want, ms.exitReason(&child{phase: c.phase, failed: c.failed}, nil), "%v, failed %q", c.phase, c.failed)
	}
}
