//go:build unix

package board

import (
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTwoMappingsShareTheTable(t *testing.T) {
	master, f, err := Create(4)
	require.NoError(t, err)
	defer f.Close()
	defer master.Close()
	child, err := Open(f, 4)
	require.NoError(t, err)
	defer child.Close()

	i, j := 0, 1
	master.Reset(i)
	master.Reset(j)
	assert.True(t, master.Short(1), "nothing idle, two slots free")

	child.SetIdle(i, 7)
	child.SetIdle(j, 0)
	assert.False(t, master.Short(2))
	assert.True(t, master.Short(3))
	child.SetBusy(j)
	state, served, begun := master.State(j)
	assert.Equal(t, []any{Busy, 0, uint64(1)}, []any{state, served, begun})
	child.SetBusy(j)
	_, _, begun = master.State(j)
	assert.Equal(t, uint64(2), begun, "each request counts")
	state, served, _ = master.State(i)
	assert.Equal(t, []any{Idle, 7}, []any{state, served})
	assert.True(t, master.Short(2), "one idle")
	child.SetLeaving(j, 3)
	assert.False(t, master.Short(1))
	assert.True(t, master.Short(2), "a leaving child is not idle")

	_, served, _ = master.State(j)
	assert.Equal(t, 3, served)

	master.Release(i)
	assert.True(t, master.Short(1), "nothing idle once the idle child's slot is released")
	master.Reset(i)
	state, served, _ = master.State(i)
	assert.Equal(t, []any{Free, 0}, []any{state, served}, "a reused slot starts clean")
}

func TestShortOnlyWithRoom(t *testing.T) {
	b, f, err := Create(2)
	require.NoError(t, err)
	defer f.Close()
	defer b.Close()
	b.Reset(0)
	b.Reset(1)
	b.SetBusy(0)
	b.SetBusy(1)
	assert.False(t, b.Short(1), "no idle child, but no room for another: nothing to ask")
	b.Release(1)
	assert.True(t, b.Short(1))
}

func TestOpenChecksSize(t *testing.T) {
	b, f, err := Create(2)
	require.NoError(t, err)
	defer f.Close()
	defer b.Close()
	_, err = Open(f, 3)
	assert.Error(t, err)
	_, _, err = Create(0)
	assert.Error(t, err)
}

// Another process sees what this one writes: the table is shared memory,
// not a copy.
func TestSharedWithAnotherProcess(t *testing.T) {
	if os.Getenv("BOARD_TEST_CHILD") != "" {
		return
	}
	b, f, err := Create(2)
	require.NoError(t, err)
	defer f.Close()
	defer b.Close()
	i := 1
	b.Reset(i)
	cmd := exec.Command(os.Args[0], "-test.run=^TestChildWrites$")
	cmd.Env = append(os.Environ(), "BOARD_TEST_CHILD=1", "BOARD_SLOT="+strconv.Itoa(i))
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	state, served, _ := b.State(i)
	assert.Equal(t, []any{Idle, 42}, []any{state, served})
}

func TestChildWrites(t *testing.T) {
	if os.Getenv("BOARD_TEST_CHILD") == "" {
		t.Skip("run by TestSharedWithAnotherProcess")
	}
	b, err := Open(os.NewFile(3, "board"), 2)
	require.NoError(t, err)
	i, err := strconv.Atoi(os.Getenv("BOARD_SLOT"))
	require.NoError(t, err)
	b.SetIdle(i, 42)
}

// BenchmarkRequestMarks is what a child writes to the scoreboard per
// request: busy when it takes it, idle when done.
func BenchmarkRequestMarks(b *testing.B) {
	board, f, err := Create(64)
	require.NoError(b, err)
	defer f.Close()
	defer board.Close()
	board.Reset(3)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		board.SetBusy(3)
		board.SetIdle(3, i)
	}
}

// BenchmarkShort is the child's check, per request, for a shortage of idle
// children, over a full board.
func BenchmarkShort(b *testing.B) {
	board, f, err := Create(64)
	require.NoError(b, err)
	defer f.Close()
	defer board.Close()
	for i := range 64 {
		board.Reset(i)
		board.SetBusy(i)
	}
	b.ReportAllocs()
	for b.Loop() {
		board.Short(4)
	}
}
