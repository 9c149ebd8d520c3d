package board

import (
	"os"

	"golang.org/x/sys/unix"
)

func newFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("prefork-board", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	return os.NewFile(uintptr(fd), "prefork-board"), nil
}
