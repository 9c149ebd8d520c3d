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

	child.SetIdle(i, 7)
	child.SetIdle(j, 0)
	child.SetBusy(j)
	state, served, begun := master.State(j)
	assert.Equal(t, []any{Busy, 0, uint64(1)}, []any{state, served, begun})
	child.SetBusy(j)
	_, _, begun = master.State(j)
	assert.Equal(t, uint64(2), begun, "each request counts")
	state, served, _ = master.State(i)
	assert.Equal(t, []any{Idle, 7}, []any{state, served})
	child.SetLeaving(j, 3)
	state, served, _ = master.State(j)
	assert.Equal(t, []any{Leaving, 3}, []any{state, served})
	child.SetParked(i, 8)
	state, served, _ = master.State(i)
	assert.Equal(t, []any{Parked, 8}, []any{state, served})

	assert.False(t, master.WaitsForClient(i))
	inProgress, waitsBegun := child.Waiting(i)
	inProgress.Add(1)
	waitsBegun.Add(1)
	waiting, waits := master.ClientWait(i)
	assert.True(t, waiting)
	assert.Equal(t, uint32(1), waits)
	assert.True(t, master.WaitsForClient(i))

	assert.Zero(t, master.RSS(i), "not read yet")
	child.SetRSS(i, 12<<20+4096)
	assert.Equal(t, int64(12<<20+4096), master.RSS(i))
	child.SetRSS(i, 5<<40)
	assert.Equal(t, int64(1<<32-1)<<10, master.RSS(i), "capped at 4 TiB")

	master.Release(i)
	master.Reset(i)
	state, served, _ = master.State(i)
	assert.Equal(t, []any{Free, 0}, []any{state, served}, "a reused slot starts clean")
	assert.False(t, master.WaitsForClient(i), "a reused slot starts clean")
	_, waits = master.ClientWait(i)
	assert.Zero(t, waits, "a reused slot starts clean")
	assert.Zero(t, master.RSS(i), "a reused slot starts clean")
	child.SetRemote(i, [16]byte{15: 1}, 80, true)
	master.Reset(i)
	_, _, ok := master.Remote(i)
	assert.False(t, ok, "a reused slot starts clean")
}

func TestRemote(t *testing.T) {
	master, f, err := Create(2)
	require.NoError(t, err)
	defer master.Close()
	defer f.Close()
	child, err := Open(f, 2)
	require.NoError(t, err)
	defer child.Close()

	_, _, ok := master.Remote(1)
	assert.False(t, ok, "none yet")
	ip := [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1} // ::ffff:127.0.0.1
	child.SetRemote(1, ip, 4242, true)
	got, port, ok := master.Remote(1)
	assert.True(t, ok)
	assert.Equal(t, ip, got)
	assert.Equal(t, uint16(4242), port)
	child.SetRemote(1, [16]byte{}, 0, false) // a Unix socket's client
	_, _, ok = master.Remote(1)
	assert.False(t, ok)
}

// The alarm wakes the master once: only the first child to look after Arm
// gets it.
func TestAlarmGoesOffOnce(t *testing.T) {
	master, f, err := Create(2)
	require.NoError(t, err)
	defer f.Close()
	defer master.Close()
	child, err := Open(f, 2)
	require.NoError(t, err)
	defer child.Close()

	assert.False(t, child.Alarm(), "not armed")
	master.Arm(AlarmAny)
	assert.True(t, child.Alarm())
	assert.False(t, child.Alarm(), "taken")
	master.Arm(AlarmAny)
	master.Arm(AlarmOff)
	assert.False(t, child.Alarm(), "disarmed")

	master.Reset(0)
	master.Reset(1)
	child.SetIdle(0, 0)
	master.Arm(AlarmNoIdle)
	assert.False(t, child.Alarm(), "a child is still idle")
	child.SetBusy(0)
	assert.True(t, child.Alarm(), "none is idle")
	assert.False(t, child.Alarm(), "taken")
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

// BenchmarkAlarm is the child's check, per request, of whether to wake
// the master, while the master watches (the alarm is not armed).
func BenchmarkAlarm(b *testing.B) {
	board, f, err := Create(64)
	require.NoError(b, err)
	defer f.Close()
	defer board.Close()
	b.ReportAllocs()
	for b.Loop() {
		board.Alarm()
	}
}
