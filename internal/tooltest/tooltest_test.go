package tooltest

import (
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestProgramFindsOne(t *testing.T) {
	sh, err := exec.LookPath("sh")
	require.NoError(t, err)
	require.Equal(t, sh, Program(t, "sh", "dash"))
}

// fakeTB records how a test would have ended.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true }
func (f *fakeTB) Fatalf(string, ...any) { f.failed = true }

func TestMissingProgramSkipsOrFails(t *testing.T) {
	const missing = "prefork-no-such-program"
	t.Setenv(EnvRequire, "")
	tb := &fakeTB{}
	Program(tb, missing, "none")
	require.True(t, tb.skipped)
	require.False(t, tb.failed)

	t.Setenv(EnvRequire, "1")
	tb = &fakeTB{}
	Program(tb, missing, "none")
	require.True(t, tb.failed)
}
