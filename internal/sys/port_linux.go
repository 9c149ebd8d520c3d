package sys

import (
	"os"
	"strconv"
	"strings"
)

// FirstUnprivilegedPort is the lowest TCP or UDP port that a process
// without privilege may bind: net.ipv4.ip_unprivileged_port_start, for
// IPv6 too. It is 1024 unless lowered, as container runtimes do (to 0).
func FirstUnprivilegedPort() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 1024
	}
	return n
}
