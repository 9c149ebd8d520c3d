package sys

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// RSS follows the memory that the process touches.
func TestRSS(t *testing.T) {
	before, ok := RSS()
	require.True(t, ok)
	assert.Positive(t, before)
	// Fresh pages, which the Go heap may have already.
	held, err := unix.Mmap(-1, 0, 64<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	require.NoError(t, err)
	defer unix.Munmap(held)
	for i := 0; i < len(held); i += 4096 { // the pages count once touched
		held[i] = 1
	}
	after, ok := RSS()
	require.True(t, ok)
	// The runtime may give some memory back meanwhile.
	assert.Greater(t, after-before, int64(56<<20), "before %d, after %d", before, after)
}

func TestParseStatm(t *testing.T) {
	for line, want := range map[string]int64{
		"1234 567 89 1 0 321 0\n": 567 * 4096,
		"1 0 0 0 0 0 0":           0,
		"1 42":                    42 * 4096,
		"1234":                    -1,
		"1234 x 89":               -1,
		"":                        -1,
	} {
		got, ok := parseStatm([]byte(line), 4096)
		if want < 0 {
			assert.False(t, ok, "%q", line)
			continue
		}
		assert.True(t, ok, "%q", line)
		assert.Equal(t, want, got, "%q", line)
	}
}

func BenchmarkRSS(b *testing.B) {
	for b.Loop() {
		if _, ok := RSS(); !ok {
			b.Fatal("cannot read RSS")
		}
	}
}
