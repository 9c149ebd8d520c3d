package prefork

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
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

// The master never waits on a child's status socket: one that is not read
// (a stopped or wedged child) fills up, and its child is killed, instead of
// the loop blocking on it for good.
func TestSendToAChildThatDoesNotReadKillsIt(t *testing.T) {
	ms := newMaster(t.Context(), config{logger: slog.New(slog.DiscardHandler), minServers: 1, maxServers: 1})
	mine, theirs, err := sys.Socketpair()
	require.NoError(t, err)
	defer mine.Close()
	defer theirs.Close() // open and never read, as a stopped child's end
	c := &child{pid: 4242, status: mine, phase: serving}
	ms.children = []*child{c}

	done := make(chan int)
	go func() {
		sent := 0
		for ; sent < 100_000 && c.phase != killed; sent++ {
			ms.send(c, wire.Look)
		}
		done <- sent
	}()
	select {
	case sent := <-done:
		assert.Equal(t, killed, c.phase, "after %d records", sent)
		t.Logf("killed after %d records", sent)
	case <-time.After(10 * time.Second):
		t.Fatal("the master blocked writing to a child that does not read")
	}
}
