//go:build unix

// Package sdnotify sends a service manager's notifications, as systemd's
// sd_notify(3) does: one datagram of newline-separated VARIABLE=value
// assignments (READY=1, STATUS=..., WATCHDOG=1) to the Unix datagram socket
// that the NOTIFY_SOCKET environment variable names. It is the whole
// protocol; there is no reply.
package sdnotify

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Environment variables that a service manager sets.
const (
	EnvSocket       = "NOTIFY_SOCKET"
	EnvWatchdogUsec = "WATCHDOG_USEC"
	EnvWatchdogPID  = "WATCHDOG_PID"
)

// sendTimeout bounds a send that waits for room in the receiver's queue.
const sendTimeout = time.Second

// Socket is where notifications go.
type Socket struct {
	addr *net.UnixAddr
}

// New returns the socket that path, NOTIFY_SOCKET's value, names: the
// absolute path of a socket file, or after '@' a name in Linux's abstract
// namespace. It returns nil and no error for an empty path: no service
// manager listens.
func New(path string) (*Socket, error) {
	switch {
	case path == "":
		return nil, nil
	case path[0] != '/' && path[0] != '@':
		// systemd also knows "vsock:" addresses, for virtual machines.
		return nil, fmt.Errorf("%s=%q is neither an absolute path nor an abstract socket name (@name)", EnvSocket, path)
	case len(path) < 2:
		return nil, fmt.Errorf("%s=%q names no socket", EnvSocket, path)
	}
	// The net package maps a leading '@' to the abstract namespace.
	return &Socket{addr: &net.UnixAddr{Name: path, Net: "unixgram"}}, nil
}

// String returns the socket's name, as NOTIFY_SOCKET gives it.
func (s *Socket) String() string { return s.addr.Name }

// Send sends state, one or more assignments separated by newlines, as one
// datagram, from a socket of its own as sd_notify does: a service manager
// that restarts makes a new socket at the same name. It waits at most a
// second for room in the receiver's queue.
func (s *Socket) Send(state string) error {
	conn, err := net.DialUnix("unixgram", nil, s.addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	_, err = conn.Write([]byte(state))
	return err
}

// WatchdogInterval reads the watchdog's settings: usec and pid are the
// values of WATCHDOG_USEC and WATCHDOG_PID, self this process's pid. It
// returns how often to send WATCHDOG=1, half the watchdog's timeout as
// sd_watchdog_enabled(3) advises, or 0 when no watchdog watches this
// process: WATCHDOG_USEC is unset, or WATCHDOG_PID names another process.
func WatchdogInterval(usec, pid string, self int) (time.Duration, error) {
	if usec == "" {
		return 0, nil
	}
	if pid != "" {
		n, err := strconv.Atoi(pid)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("%s=%q is not a process id", EnvWatchdogPID, pid)
		}
		if n != self {
			return 0, nil
		}
	}
	n, err := strconv.ParseUint(usec, 10, 63)
	if err != nil || n == 0 || n > uint64(1<<63-1)/uint64(time.Microsecond) {
		return 0, fmt.Errorf("%s=%q is not a positive number of microseconds", EnvWatchdogUsec, usec)
	}
	return time.Duration(n) * time.Microsecond / 2, nil
}

// Reloading returns the assignments that say a reload begins: RELOADING=1,
// and MONOTONIC_USEC, the time of CLOCK_MONOTONIC in microseconds, which
// systemd requires with it (for Type=notify-reload) to tell this reload
// from an earlier one. READY=1 says it is done.
func Reloading() string {
	usec, ok := monotonicUsec()
	if !ok {
		return "RELOADING=1"
	}
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10)
}

// Status makes a STATUS= assignment of text, which must hold no newline:
// one would end the assignment. Newlines become spaces.
func Status(text string) string {
	return "STATUS=" + strings.ReplaceAll(text, "\n", " ")
}
