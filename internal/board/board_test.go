//go:build unix

package board

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

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

	i := master.Claim(100)
	j := master.Claim(200)
	require.Equal(t, []int{0, 1}, []int{i, j})
	idle, taken := master.Count()
	assert.Equal(t, []int{0, 2}, []int{idle, taken})

	child.SetIdle(i, 7)
	child.SetIdle(j, 0)
	idle, _ = master.Count()
	assert.Equal(t, 2, idle)
	before := time.Now()
	child.SetBusy(j)
	state, served, since := master.State(j)
	assert.Equal(t, Busy, state)
	assert.Zero(t, served)
	assert.False(t, since.Before(before.Add(-time.Millisecond)))
	state, served, _ = master.State(i)
	assert.Equal(t, []any{Idle, 7}, []any{state, served})
	idle, _ = master.Count()
	assert.Equal(t, 1, idle)
	child.SetLeaving(j)
	idle, _ = master.Count()
	assert.Equal(t, 1, idle, "a leaving child is not idle")

	master.Release(i)
	idle, taken = master.Count()
	assert.Equal(t, []int{0, 1}, []int{idle, taken})
	assert.Equal(t, 0, master.Claim(300), "a released slot is claimed again, clean")
	state, served, _ = master.State(0)
	assert.Equal(t, []any{Free, 0}, []any{state, served})
}

func TestFullBoard(t *testing.T) {
	b, f, err := Create(1)
	require.NoError(t, err)
	defer f.Close()
	defer b.Close()
	assert.Equal(t, 0, b.Claim(1))
	assert.Equal(t, -1, b.Claim(2))
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
	i := b.Claim(1)
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
