package prefork

import (
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
