//go:build unix

package sys

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// IsPacket reports whether network carries datagrams rather than streams.
func IsPacket(network string) bool {
	return strings.HasPrefix(network, "udp") || network == "unixgram"
}

// IsUnix reports whether network is a Unix domain socket network.
func IsUnix(network string) bool { return strings.HasPrefix(network, "unix") }

// Listen creates the socket for network ("tcp", "tcp4", "tcp6", "udp",
// "udp4", "udp6", "unix" or "unixgram") and address: bound, listening if it
// is a stream socket, with SO_REUSEPORT if reusePort. The returned file is
// in non-blocking mode, the mode every child expects; os/exec can hand it to
// children without changing that (see listenerFile). A Unix
// socket file left behind by a server that is gone is replaced.
func Listen(network, address string, backlog int, reusePort bool) (*os.File, net.Addr, error) {
	return ListenWith(network, address, backlog, reusePort, nil)
}

// ListenWith is Listen, and gives the file of a Unix socket the owner,
// group and mode that file asks for, if file is not nil. They are set
// between bind and listen: no client can connect to a stream socket before
// it listens, so none connects while the file has the mode bind gave it.
// (A datagram socket receives from its bind on.) On failure the file is
// removed.
func ListenWith(network, address string, backlog int, reusePort bool, file *SocketFile) (*os.File, net.Addr, error) {
	family, sa, err := resolve(network, address)
	if err != nil {
		return nil, nil, err
	}
	sotype := unix.SOCK_STREAM
	if IsPacket(network) {
		sotype = unix.SOCK_DGRAM
	}
	fd, err := socket(family, sotype)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	fail := func(call string, err error) (*os.File, net.Addr, error) {
		unix.Close(fd)
		return nil, nil, os.NewSyscallError(call, err)
	}
	if family != unix.AF_UNIX {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	if reusePort {
		if err := setReusePort(fd); err != nil {
			return fail("setsockopt", err)
		}
	}
	if family == unix.AF_INET6 {
		v6only := 0
		if strings.HasSuffix(network, "6") {
			v6only = 1
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("setsockopt", err)
		}
	}
	err = unix.Bind(fd, sa)
	if errors.Is(err, unix.EADDRINUSE) && family == unix.AF_UNIX && removeStale(address, sotype) {
		err = unix.Bind(fd, sa)
	}
	if err != nil {
		return fail("bind", err)
	}
	if family == unix.AF_UNIX {
		if err := file.apply(address); err != nil {
			unix.Close(fd)
			RemoveSocketFile(network, address)
			return nil, nil, err
		}
	}
	if sotype == unix.SOCK_STREAM && family != unix.AF_UNIX {
		if err := setConnOptions(fd); err != nil {
			return fail("setsockopt", err)
		}
	}
	if sotype == unix.SOCK_STREAM {
		if err := unix.Listen(fd, backlog); err != nil {
			return fail("listen", err)
		}
	}
	bound, err := syscall.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	f, err := listenerFile(fd)
	if err != nil {
		return nil, nil, err
	}
	return f, Addr(network, bound), nil
}

// listenerFile wraps the socket fd in a File in non-blocking mode, the
// mode every child expects, without making it the master's to poll.
// os.NewFile registers a descriptor that is non-blocking already with this
// process's netpoller (edge-triggered, and not exclusive: the master would
// wake for every connection), and os/exec's call to Fd() switches a file
// that the net package made to blocking mode, under the children's feet.
// So the File is made while the descriptor is blocking, and the mode is
// set afterwards, once: the flag belongs to the socket, which every child
// and every other holder of the socket shares. On failure fd is closed.
func listenerFile(fd int) (*os.File, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "prefork-listener")
	if err := unix.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, os.NewSyscallError("fcntl", err)
	}
	return f, nil
}

// ReservePort binds a socket with SO_REUSEPORT to learn which port the
// system gives to an address with port 0, then releases it, so that
// children that each bind their own socket all bind that one port.
func ReservePort(network, address string) (string, error) {
	f, addr, err := Listen(network, address, 1, true)
	if err != nil {
		return "", err
	}
	f.Close()
	return addr.String(), nil
}

// removeStale removes the Unix socket file at path if nothing listens on it
// any more, and reports whether it did.
func removeStale(path string, sotype int) bool {
	if strings.HasPrefix(path, "@") { // Linux abstract name: no file
		return false
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return false
	}
	fd, err := socket(unix.AF_UNIX, sotype)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	// Non-blocking: a live server whose queue is full would make connect
	// wait for it (EAGAIN then, which says a server is there).
	if unix.SetNonblock(fd, true) != nil {
		return false
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); !errors.Is(err, unix.ECONNREFUSED) {
		return false // a server is there, or the file is not ours to judge
	}
	return os.Remove(path) == nil
}

// RemoveSocketFile removes the file of a Unix socket the master created.
func RemoveSocketFile(network, address string) {
	if IsUnix(network) && !strings.HasPrefix(address, "@") {
		os.Remove(address)
	}
}

// resolve turns network and address into a socket family and address. For
// the wildcard address of "tcp" or "udp" it picks a dual-stack IPv6 socket
// where the host supports one, as the net package does.
func resolve(network, address string) (int, unix.Sockaddr, error) {
	var ip net.IP
	var port int
	var zone string
	switch network {
	case "unix", "unixgram":
		if address == "" {
			return 0, nil, errors.New("empty Unix socket path")
		}
		return unix.AF_UNIX, &unix.SockaddrUnix{Name: address}, nil
	case "tcp", "tcp4", "tcp6":
		a, err := net.ResolveTCPAddr(network, address)
		if err != nil {
			return 0, nil, err
		}
		ip, port, zone = a.IP, a.Port, a.Zone
	case "udp", "udp4", "udp6":
		a, err := net.ResolveUDPAddr(network, address)
		if err != nil {
			return 0, nil, err
		}
		ip, port, zone = a.IP, a.Port, a.Zone
	default:
		return 0, nil, fmt.Errorf("unsupported network %q", network)
	}
	version := network[3:] // "", "4" or "6"
	ip4 := ip.To4()
	wildcard := len(ip) == 0 || ip.IsUnspecified()
	switch {
	case version == "4" || (version == "" && ip4 != nil && !wildcard):
		if !wildcard && ip4 == nil {
			return 0, nil, fmt.Errorf("address %v is not IPv4", ip)
		}
		sa := &unix.SockaddrInet4{Port: port}
		if !wildcard {
			copy(sa.Addr[:], ip4)
		}
		return unix.AF_INET, sa, nil
	case wildcard && (version == "6" || supportsIPv4map()):
		return unix.AF_INET6, &unix.SockaddrInet6{Port: port}, nil
	case wildcard:
		return unix.AF_INET, &unix.SockaddrInet4{Port: port}, nil
	case ip4 != nil && version == "6":
		return 0, nil, fmt.Errorf("address %v is not IPv6", ip)
	}
	sa := &unix.SockaddrInet6{Port: port}
	copy(sa.Addr[:], ip.To16())
	if zone != "" {
		if ifi, err := net.InterfaceByName(zone); err == nil {
			sa.ZoneId = uint32(ifi.Index)
		} else if n, err := strconv.Atoi(zone); err == nil {
			sa.ZoneId = uint32(n)
		}
	}
	return unix.AF_INET6, sa, nil
}

// supportsIPv4map reports whether an IPv6 socket can also serve IPv4
// (IPV6_V6ONLY off), as the net package probes it: not on OpenBSD, nor
// where IPv6 is missing.
var supportsIPv4map = sync.OnceValue(func() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0) != nil {
		return false
	}
	sa := &unix.SockaddrInet6{}
	copy(sa.Addr[:], net.ParseIP("::ffff:127.0.0.1").To16())
	return unix.Bind(fd, sa) == nil
})

// Addr converts a socket address of network to a net.Addr: a *net.TCPAddr,
// *net.UDPAddr or *net.UnixAddr. It returns nil for an unnamed address (an
// unbound Unix datagram sender).
func Addr(network string, sa syscall.Sockaddr) net.Addr {
	var ip net.IP
	var port int
	var zone string
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		ip, port = net.IP(sa.Addr[:]).To16(), sa.Port
	case *syscall.SockaddrInet6:
		ip, port = net.IP(sa.Addr[:]), sa.Port
		if sa.ZoneId != 0 {
			zone = strconv.Itoa(int(sa.ZoneId))
		}
	case *syscall.SockaddrUnix:
		if sa.Name == "" {
			return nil
		}
		return &net.UnixAddr{Name: sa.Name, Net: network}
	default:
		return nil
	}
	if IsPacket(network) {
		return &net.UDPAddr{IP: ip, Port: port, Zone: zone}
	}
	return &net.TCPAddr{IP: ip, Port: port, Zone: zone}
}

// socketPath is the file a Unix socket is bound to, or "" for another
// socket, an unbound one, or one with an abstract name (Linux).
func socketPath(fd int) string {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return ""
	}
	u, ok := sa.(*unix.SockaddrUnix)
	if !ok || u.Name == "" || u.Name[0] == '@' {
		return ""
	}
	return u.Name
}

// closeUnixIntake removes the file of a Unix listener, so that clients can
// no longer reach it (they find no file, or a new server's), while what is
// queued on the socket can still be served.
func closeUnixIntake(fd int) error {
	if path := socketPath(fd); path != "" {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// unixIntakeClosed reports whether fd is a Unix listener whose file is
// gone.
func unixIntakeClosed(fd int) bool {
	path := socketPath(fd)
	if path == "" {
		return false
	}
	_, err := os.Lstat(path)
	return errors.Is(err, os.ErrNotExist)
}
