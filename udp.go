package prefork

import (
	"errors"
	"net"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
)

// The datagram side of a child: a request is one datagram, answered with
// Reply.

// maxDatagram is the largest datagram a child receives whole: the largest
// UDP payload fits. A longer one (possible on unixgram) is dropped and
// logged, never passed on cut.
const maxDatagram = 64 << 10

// replyTimeout bounds how long Reply waits for room in a full send buffer.
const replyTimeout = 5 * time.Second

// errNoSender is Reply's error for a datagram from an unbound Unix socket.
var errNoSender = errors.New("prefork: the sender has no address to reply to")

// dropLong logs a datagram that was dropped for being longer than
// maxDatagram.
func (d *dispatcher) dropLong(sender net.Addr) {
	d.log.Warn("prefork: datagram longer than the buffer; dropped", "remote", addrString(sender), "buffer", maxDatagram)
}

// nextDatagram takes one datagram from socket s, or returns nil if there
// is none (another child took it, or it was too long and dropped).
func (w *worker) nextDatagram(s *socket) (*Request, error) {
	n, from, truncated, err := sys.ReadFrom(s.fd, w.datagram)
	if err != nil {
		return nil, w.acceptError("recvmsg", err)
	}
	w.shortSince = time.Time{}
	sender := sys.Addr(s.network, from)
	if truncated {
		w.dropLong(sender)
		return nil, nil
	}
	reply := func(b []byte) error {
		if sender == nil {
			return errNoSender
		}
		return sys.WriteTo(s.fd, b, from, replyTimeout)
	}
	return &Request{Data: w.datagram[:n], RemoteAddr: sender, Network: s.network, SocketName: s.name, Served: w.served, stopping: w.stopping, reply: reply}, nil
}
