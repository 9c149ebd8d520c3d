//go:build unix && !linux

package board

import "os"

// newFile returns a temporary file that is already unlinked: it lives as
// long as a process holds it open or mapped.
func newFile() (*os.File, error) {
	f, err := os.CreateTemp("", "prefork-board-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
