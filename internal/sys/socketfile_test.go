//go:build unix

package sys

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ListenWith gives the socket's file the mode asked for, and leaves the
// owner and group that are -1 as bind made them.
func TestListenWithSocketFile(t *testing.T) {
	for _, network := range []string{"unix", "unixgram"} {
		t.Run(network, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s")
			f, _, err := ListenWith(network, path, 4, false, &SocketFile{Mode: 0o640, UID: -1, GID: -1})
			require.NoError(t, err)
			defer f.Close()
			fi, err := os.Lstat(path)
			require.NoError(t, err)
			assert.Equal(t, os.ModeSocket|0o640, fi.Mode())
			st := fi.Sys().(*syscall.Stat_t)
			assert.Equal(t, [2]int{os.Geteuid(), os.Getegid()}, [2]int{int(st.Uid), int(st.Gid)})
		})
	}
}
