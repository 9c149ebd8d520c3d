package prefork

import (
	"cmp"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prefork-go/prefork/internal/board"
)

// Stats is a snapshot of a running pool, from Manager.Stats.
type Stats struct {
	// Time is when the master last looked at its pool: at every change of
	// a child, and every 20 ms while children are busy.
	Time time.Time
	// Network and Addr are the socket's (Addr with the port bound); with
	// several sockets, the first's.
	Network, Addr string
	// Sockets are the sockets the pool serves, in the order of
	// Manager.Sockets, with their queues.
	Sockets []SocketStats
	// Limits are the pool's size limits in force (see Manager.SetLimits),
	// and MaxRequests the requests a child serves before it is replaced.
	Limits      Limits
	MaxRequests int
	// Stopping says that a graceful stop has begun.
	Stopping bool
	// Children are the master's children, oldest first.
	Children []ChildStats
	// Queued is how many connections wait in the sockets' queues, those
	// that can be read, and MaxQueued the most seen; -1 when none can
	// (see SocketStats).
	Queued, MaxQueued int
	// Requests counts the requests that children have begun, ever.
	Requests uint64
	// Started counts the children started, ever.
	Started uint64
	// Exits counts the children that have exited, by why.
	Exits map[ExitReason]uint64
	// MaxServersReached counts the times connections waited and the pool
	// would have started children, but had MaxServers already.
	MaxServersReached uint64
	// SlowRequests counts the requests that ran for Manager.SlowRequest.
	SlowRequests uint64
}

// SocketStats is one socket in a Stats snapshot.
type SocketStats struct {
	// Name is the socket's name (Request.SocketName), Network and Addr
	// its network and address, with the port bound. The sockets that
	// systemd passes under one name share it: Name and Addr together
	// tell each apart.
	Name, Network, Addr string
	// Queued is how many connections wait in the socket's queue (for
	// datagrams, 1 if any waits), and MaxQueued the most seen; -1 where
	// the queue cannot be read (reuse-port mode, systems other than
	// Linux). The queue is read only while children are busy, so that an
	// idle pool costs nothing.
	Queued, MaxQueued int
}

// Limits are the pool's size limits; see the Manager fields of the same
// names, and Manager.SetLimits.
type Limits struct {
	MinServers, MaxServers           int
	MinSpareServers, MaxSpareServers int
}

// ChildStats is one child in a Stats snapshot.
type ChildStats struct {
	PID   int // 0 while its process is being started
	State ChildState
	// Served counts the requests it has finished.
	Served int
	// Started is when the master started it.
	Started time.Time
	// BusySince is when the master first saw the request in hand, and
	// Remote its client's address (IP and port; empty for Unix sockets);
	// zero unless State is ChildBusy.
	BusySince time.Time
	Remote    string
	// RSS is the memory the child holds, in bytes: its resident set size,
	// the pages it shares with other processes (the program's code)
	// included. The child reads it when it is ready and after a request,
	// at most once a second, so it may be a second old, or older if the
	// child has been idle since. Zero means unknown: not read yet, or a
	// system other than Linux.
	RSS int64
}

// ChildState is what a child does, as the master sees it.
type ChildState string

// A child's states.
const (
	ChildStarting ChildState = "starting" // started, not ready yet
	ChildIdle     ChildState = "idle"     // ready, waits for a request
	ChildBusy     ChildState = "busy"     // serves a request
	ChildParked   ChildState = "parked"   // ready and spare, out of the listener's queue
	ChildLeaving  ChildState = "leaving"  // leaves by itself: MaxRequests, or an error
	ChildRetiring ChildState = "retiring" // told to leave: surplus, or replaced (a restart, MaxLifetime, MaxChildMemory)
	ChildStopping ChildState = "stopping" // leaves with the pool
	ChildTimedOut ChildState = "timed out"
	ChildKilled   ChildState = "killed"
)

// ExitReason is why a child exited.
type ExitReason string

// Why children exit.
const (
	ExitStopped        ExitReason = "stopped"         // the pool stopped
	ExitRetired        ExitReason = "retired"         // surplus: more spare children than MaxSpareServers
	ExitRestarted      ExitReason = "restarted"       // replaced by RestartChildren
	ExitMaxRequests    ExitReason = "max requests"    // served MaxRequests
	ExitMaxLifetime    ExitReason = "max lifetime"    // lived MaxLifetime, and was replaced
	ExitMemoryLimit    ExitReason = "memory limit"    // grew past MaxChildMemory, and was replaced
	ExitRequestTimeout ExitReason = "request timeout" // overran RequestTimeout, and was stopped
	ExitStartFailed    ExitReason = "start failed"    // exited before it was ready: Initialize failed, or StartTimeout passed
	ExitSick           ExitReason = "sick"            // could not accept for lack of descriptors or memory
	ExitCrashed        ExitReason = "crashed"         // exited by itself with an error or a nonzero status: a panic, say
	ExitSignaled       ExitReason = "signaled"        // killed by a signal the master did not send; SIGKILL is often the OOM killer
	ExitKilled         ExitReason = "killed"          // killed by the master: it did not stop in time
)

// Stats returns a snapshot of the pool that Run runs in this process's
// master. It is safe from any goroutine, hooks included, and cheap: it
// copies what the master published at its last look, and makes no system
// call. Without a running master it returns the zero Stats.
func (m *Manager) Stats() Stats {
	ms := m.master(false)
	if ms == nil {
		return Stats{}
	}
	return ms.stats.snapshot()
}

// statsBoard is what the master publishes for Stats: its loop writes it,
// under mu, at the end of each look; Stats copies it.
type statsBoard struct {
	mu  sync.Mutex
	pub Stats
}

func (b *statsBoard) snapshot() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.pub
	s.Children = append([]ChildStats(nil), b.pub.Children...)
	s.Sockets = append([]SocketStats(nil), b.pub.Sockets...)
	s.Exits = make(map[ExitReason]uint64, len(b.pub.Exits))
	for r, n := range b.pub.Exits {
		s.Exits[r] = n
	}
	return s
}

// publish writes the master's view for Stats. It runs on the loop, which
// owns everything it reads; the board it reads is shared memory.
func (ms *master) publish(now time.Time) {
	b := &ms.stats
	b.mu.Lock()
	defer b.mu.Unlock()
	p := &b.pub
	p.Time = now
	p.Stopping = ms.stopping || ms.draining != nil
	p.Requests = ms.begunGone
	p.Children = p.Children[:0]
	for _, c := range ms.children {
		state, served, begun := ms.board.State(c.slot)
		p.Requests += begun
		cs := ChildStats{PID: c.pid, State: c.state(state), Served: served, Started: c.started, RSS: ms.board.RSS(c.slot)}
		if cs.State == ChildBusy {
			cs.BusySince = c.busySince
			if ip, port, ok := ms.board.Remote(c.slot); ok {
				cs.Remote = netip.AddrPortFrom(netip.AddrFrom16(ip).Unmap(), port).String()
			}
		}
		p.Children = append(p.Children, cs)
	}
}

// reportSize calls PoolResized if the number of children has changed.
func (ms *master) reportSize() {
	hook := ms.cfg.hooks.PoolResized
	if hook == nil || len(ms.children) == ms.reported {
		return
	}
	ms.reported = len(ms.children)
	if err := guard("PoolResized", func() error { hook(ms.reported); return nil }); err != nil {
		logPanic(ms.log, err)
	}
}

// ipPort gives a client's address as the board keeps it.
func ipPort(a net.Addr) (ip [16]byte, port uint16, ok bool) {
	var nip net.IP
	switch a := a.(type) {
	case *net.TCPAddr:
		nip, port = a.IP, uint16(a.Port)
	case *net.UDPAddr:
		nip, port = a.IP, uint16(a.Port)
	}
	if nip = nip.To16(); nip == nil {
		return ip, 0, false
	}
	copy(ip[:], nip)
	return ip, port, true
}

// state names what c does; board is its slot's state.
func (c *child) state(boardState uint32) ChildState {
	switch c.phase {
	case starting:
		return ChildStarting
	case serving, parked:
		switch {
		case boardState == board.Busy:
			// A parked child serves the connection the kernel woke it for
			// as it was parked.
			return ChildBusy
		case c.phase == parked:
			return ChildParked
		}
		return ChildIdle
	case leaving:
		return ChildLeaving
	case retiring:
		return ChildRetiring
	case stopping:
		return ChildStopping
	case timedOut:
		return ChildTimedOut
	}
	return ChildKilled
}

// counted adds to the master's totals; the next publish shows them.
func (ms *master) counted(f func(p *Stats)) {
	ms.stats.mu.Lock()
	defer ms.stats.mu.Unlock()
	f(&ms.stats.pub)
}

// exitReason says why child c exited, with err from its Wait.
func (ms *master) exitReason(c *child, err error) ExitReason {
	switch {
	case c.phase == timedOut || !c.terminated.IsZero(): // then killed, if it did not stop
		return ExitRequestTimeout
	case !c.ready() && c.phase == stopping: // the pool stopped while it started
		return ExitStopped
	case !c.ready() && (c.phase != killed || c.failed != ""): // not the master's kill, or for StartTimeout
		return ExitStartFailed
	case c.phase == killed:
		return ExitKilled
	case strings.HasPrefix(c.failed, errSick.Error()):
		return ExitSick
	case killedBySignal(err):
		return ExitSignaled
	case err != nil || c.failed != "":
		return ExitCrashed
	}
	switch c.phase {
	case stopping:
		return ExitStopped
	case retiring:
		return cmp.Or(c.due, ExitRetired)
	case leaving:
		return ExitMaxRequests
	}
	return ExitCrashed // left unannounced
}

// logStats writes the snapshot in one line, on SIGUSR1.
func (ms *master) logStats() {
	s := ms.stats.snapshot()
	counts := map[ChildState]int{}
	for _, c := range s.Children {
		counts[c.State]++
	}
	states := make([]any, 0, len(counts))
	for _, st := range []ChildState{ChildStarting, ChildIdle, ChildBusy, ChildParked, ChildLeaving, ChildRetiring, ChildStopping, ChildTimedOut, ChildKilled} {
		if counts[st] > 0 {
			states = append(states, slog.Int(strings.ReplaceAll(string(st), " ", "_"), counts[st]))
		}
	}
	exits := make([]any, 0, len(s.Exits))
	for r, n := range s.Exits {
		exits = append(exits, slog.Uint64(strings.ReplaceAll(string(r), " ", "_"), n))
	}
	var queues []any // each socket's, when there are several
	names := map[string]int{}
	for _, sock := range s.Sockets {
		names[sock.Name]++
	}
	for _, sock := range s.Sockets {
		key := sock.Name
		if names[key] > 1 { // systemd's sockets can share a name
			key += " " + sock.Network + " " + sock.Addr
		}
		if len(s.Sockets) > 1 {
			queues = append(queues, slog.Int(key, sock.Queued))
		}
	}
	ms.log.Info("prefork: stats",
		"children", len(s.Children), slog.Group("states", states...),
		"queued", s.Queued, "max_queued", s.MaxQueued, slog.Group("queued_by_socket", queues...), "requests", s.Requests,
		"started", s.Started, slog.Group("exits", exits...), "max_servers_reached", s.MaxServersReached,
		"slow_requests", s.SlowRequests)
}
