package sys

import (
	"os"

	"golang.org/x/sys/unix"
)

// RSS returns the calling process's resident set size in bytes: the pages
// it has in memory, those it shares included (its program's code, say), as
// the second field of /proc/self/statm counts them. ok is false where it
// cannot be read (no /proc). It costs three system calls (open, read,
// close) and one small allocation, the path's.
func RSS() (bytes int64, ok bool) {
	fd, err := unix.Open("/proc/self/statm", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer unix.Close(fd)
	var buf [128]byte // "size resident shared text lib data dt", in pages
	n, err := unix.Read(fd, buf[:])
	if err != nil || n <= 0 {
		return 0, false
	}
	return parseStatm(buf[:n], os.Getpagesize())
}

// parseStatm returns the resident size that a /proc/<pid>/statm line gives,
// in bytes.
func parseStatm(line []byte, pageSize int) (int64, bool) {
	var pages int64
	field, digits := 0, 0
	for _, b := range line {
		switch {
		case b == ' ' || b == '\n':
			if field == 1 {
				return pages * int64(pageSize), digits > 0
			}
			field++
		case field != 1:
		case b < '0' || b > '9' || digits == 18: // 18 digits cannot overflow
			return 0, false
		default:
			pages = pages*10 + int64(b-'0')
			digits++
		}
	}
	return pages * int64(pageSize), field == 1 && digits > 0
}
