//go:build unix

package sys

import "os"

// SocketFile is what to make of a Unix socket's file once it is bound:
// its owner, group and permissions.
type SocketFile struct {
	Mode     os.FileMode // permission bits; 0 leaves what bind made
	UID, GID int         // -1 leaves the owner, or the group, as it is
}

// apply gives the file at path its owner and group, then its mode. A nil
// SocketFile changes nothing.
func (f *SocketFile) apply(path string) error {
	if f == nil {
		return nil
	}
	if f.UID >= 0 || f.GID >= 0 {
		if err := os.Lchown(path, f.UID, f.GID); err != nil {
			return err
		}
	}
	if f.Mode != 0 {
		return os.Chmod(path, f.Mode)
	}
	return nil
}
