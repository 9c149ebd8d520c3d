package sys

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// A Unix stream listener tells nothing of its queue through getsockopt or
// ioctl (SIOCINQ fails on a listening socket); the kernel's socket
// diagnostics do, over netlink, as ss -xl shows it: the connections waiting
// to be accepted (UNIX_DIAG_RQLEN's rqueue), looked up by the socket's
// inode. It needs the kernel's unix_diag module (CONFIG_UNIX_DIAG), which
// distributions build.

const (
	unixDiagShowRQLen = 0x10 // UDIAG_SHOW_RQLEN
	unixDiagRQLen     = 4    // UNIX_DIAG_RQLEN, the attribute that carries it
	tcpListen         = 10   // TCP_LISTEN, the state of a listening socket
	nlmsgHdrLen       = 16
	unixDiagReqLen    = 24
	unixDiagMsgLen    = 16
)

// unixQueued returns the number of connections waiting in the queue of the
// listening Unix stream socket fd, or -1 if it cannot be read.
func unixQueued(fd int) int {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return -1
	}
	nl, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return -1
	}
	defer unix.Close(nl)

	var req [nlmsgHdrLen + unixDiagReqLen]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1) // sequence number
	r := req[nlmsgHdrLen:]
	r[0] = unix.AF_UNIX
	ne.PutUint32(r[4:], 1<<tcpListen)
	ne.PutUint32(r[8:], uint32(st.Ino))
	ne.PutUint32(r[12:], unixDiagShowRQLen)
	ne.PutUint32(r[16:], ^uint32(0)) // no cookie: the inode says which socket
	ne.PutUint32(r[20:], ^uint32(0))
	if err := unix.Sendto(nl, req[:], 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return -1
	}
	var resp [512]byte
	n, _, err := unix.Recvfrom(nl, resp[:], 0)
	if err != nil {
		return -1
	}
	return parseUnixDiag(resp[:n], uint32(st.Ino))
}

// parseUnixDiag finds the receive queue of socket ino in a netlink reply.
func parseUnixDiag(b []byte, ino uint32) int {
	ne := binary.NativeEndian
	if len(b) < nlmsgHdrLen+unixDiagMsgLen {
		return -1
	}
	size := int(ne.Uint32(b[0:]))
	if ne.Uint16(b[4:]) != unix.SOCK_DIAG_BY_FAMILY || size > len(b) || size < nlmsgHdrLen+unixDiagMsgLen {
		return -1 // an error (NLMSG_ERROR), or not what was asked
	}
	msg := b[nlmsgHdrLen:size]
	if ne.Uint32(msg[4:]) != ino {
		return -1
	}
	for attrs := msg[unixDiagMsgLen:]; len(attrs) >= 4; {
		alen, atype := int(ne.Uint16(attrs[0:])), ne.Uint16(attrs[2:])
		if alen < 4 || alen > len(attrs) {
			return -1
		}
		if atype == unixDiagRQLen && alen >= 12 {
			return int(ne.Uint32(attrs[4:]))
		}
		attrs = attrs[min((alen+3)&^3, len(attrs)):]
	}
	return -1
}
