package prefork

import (
	"log/slog"
	"os"
	"testing"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Events name a child's record, not its pid: when a pid is reused, the
// exit of the old child does not end the new one's record or free its slot
// on the board.
func TestExitOfAReusedPidLeavesTheNewChild(t *testing.T) {
	b, f, err := board.Create(2)
	require.NoError(t, err)
	defer f.Close()
	defer b.Close()
	ms := newMaster(t.Context(), config{logger: slog.New(slog.DiscardHandler), minServers: 1, maxServers: 2})
	ms.board, ms.slots = b, []bool{true, true}
	status := func() *os.File {
		r, w, err := os.Pipe()
		require.NoError(t, err)
		t.Cleanup(func() { r.Close(); w.Close() })
		return r
	}
	old := &child{pid: 4242, slot: 0, status: status(), phase: serving}
	young := &child{pid: 4242, slot: 1, status: status(), phase: serving}
	b.SetPID(0, 4242)
	b.SetPID(1, 4242)
	ms.children = []*child{old, young}

	ms.handle(event{c: old, exited: true})
	assert.Equal(t, []*child{young}, ms.children)
	assert.Equal(t, []bool{false, true}, ms.slots, "the young child's slot stays taken")

	ms.handle(event{c: old, exited: true}) // a late duplicate names a record that is gone
	assert.Equal(t, []*child{young}, ms.children)
}
