package prefork

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// phase is where a child is in its life, as the master sees it. It changes
// only through master.setPhase.
type phase uint8

const (
	starting phase = iota // started; not ready yet
	serving               // ready, and takes requests: the board says idle or busy
	parked                // ready, kept spare, out of the listener's queue
	leaving               // said it leaves, untold (MaxRequests)
	retiring              // told to retire: takes no new request
	stopping              // told to stop with the pool
	timedOut              // sent SIGTERM for RequestTimeout
	killed                // sent SIGKILL
)

var phaseNames = [...]string{"starting", "serving", "parked", "leaving", "retiring", "stopping", "timed out", "killed"}

func (p phase) String() string { return phaseNames[p] }

// child is the master's record of one child process. Whether it is idle
// or busy is on the board, in its slot. Events name the record, not the
// pid: an exited child's pid may already be another's.
type child struct {
	pid        int // 0 until the child has started
	proc       *os.Process
	slot       int
	phase      phase
	startPhase phase  // serving, or parked: what it is once ready
	failed     string // the error the child reported before it exited
	// due is why the master replaces the child (a restart, MaxLifetime,
	// MaxChildMemory); empty while it does not.
	due ExitReason

	started    time.Time
	expires    time.Time // when MaxLifetime makes it due; zero: never
	readyAt    time.Time
	begun      uint64    // the board's count of requests begun, when last seen
	busySince  time.Time // when the master first saw the current request
	terminated time.Time // when the master sent SIGTERM for RequestTimeout
	retiredAt  time.Time // when the master told it to retire
	leftAt     time.Time // when it said it takes no more requests
	readyRSS   int64     // its memory as it became ready, as the master first read it; -1: none
	seen       uint64    // the board's count of requests begun, for stuck children
	moved      time.Time // when it last took a request, or nothing waited for it
	stuck      bool      // logged as stuck
	waits      uint32    // the board's count of waits for the client, when last seen
	waitSince  time.Time // when the master first saw the current wait
	contended  uint32    // the wait during which the child was asked to let its client go
	slow       uint64    // the request (board count) the child was asked to log as slow
	cmd        *exec.Cmd
	status     *os.File // the master's end of the status socket
}

// active reports whether the child takes requests, or will.
func (c *child) active() bool { return c.phase <= parked }

// untold reports whether the master has not asked the child to go.
func (c *child) untold() bool { return c.phase <= leaving }

// ready reports whether the child has reported for duty.
func (c *child) ready() bool { return !c.readyAt.IsZero() }

// setPhase moves a child to phase p, and does what the change needs: tells
// the child, signals it, notes the time. A child never goes back to an
// earlier phase, but between serving and parked; a killed child stays
// killed.
func (ms *master) setPhase(c *child, p phase) {
	from := c.phase
	switch {
	case from == p, from == killed:
		return
	case p < from && !(from == parked && p == serving):
		return
	case p == stopping && from == timedOut: // already on its way out, harder
		return
	}
	c.phase = p
	switch p {
	case serving:
		if from == parked {
			ms.send(c, wire.Unpark)
		}
	case parked:
		if from != starting { // one started parked was told so at its start
			ms.send(c, wire.Park)
		}
	case retiring:
		c.retiredAt = time.Now()
		ms.send(c, wire.Retire)
	case stopping:
		ms.send(c, wire.Stop)
	case timedOut:
		c.terminated = time.Now()
		c.signal(syscall.SIGTERM)
	case killed:
		c.signal(syscall.SIGKILL)
	}
}

// signal sends a child sig, if it has started.
func (c *child) signal(sig syscall.Signal) {
	if c.proc != nil {
		c.proc.Signal(sig)
	}
}

// send writes a record to a child. A child that cannot be told (it just
// died) is reaped all the same; one that has not started yet reads it when
// it does.
func (ms *master) send(c *child, kind wire.Kind) { ms.sendRecord(c, wire.Record{Kind: kind}) }

// sendRecord never waits: the loop must not block on one child. A status
// socket with no room left holds hundreds of records its child has not
// read: the child is stopped or wedged, and is killed.
func (ms *master) sendRecord(c *child, rec wire.Record) {
	var b [wire.RecordSize]byte
	if err := sys.WriteNow(c.status, wire.Encode(&b, rec)); errors.Is(err, syscall.EAGAIN) {
		ms.log.Warn("prefork: child does not read what the master sends; killing it", "pid", c.pid)
		ms.setPhase(c, killed)
	}
}
