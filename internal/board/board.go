//go:build unix

// Package board is the scoreboard that a prefork master shares with its
// children, as Apache's prefork MPM has: a table in shared memory with one
// slot per child, where each child writes whether it is idle or busy. A
// child changes state twice per request without a system call, and the
// master reads the table when it needs to; only when idle children run
// short does a child wake the master, over its status socket.
//
// A slot is 32 bytes: the child's pid (written by the master, which keeps
// its own record of which slots it gave), its state, its count of requests
// served, whether it waits for its client, the number of requests it has
// begun, and its resident memory as it last read it (all written by the
// child). Every field is accessed
// atomically. One more slot, after the children's, holds the alarm: the
// master arms it when it stops watching the board closely (nothing is
// busy), or when the pool could grow and a child that takes the last idle
// slot should tell it at once; the first child that sets it off wakes the
// master. Clocks stay out of the table: a child would need a system
// call per request to read one that all processes share and that no time
// step moves; the master times requests by watching the count change.
package board

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Slot states.
const (
	Free    uint32 = iota // no child, or one that has not reported yet
	Idle                  // the child waits for a request
	Busy                  // the child serves a request
	Leaving               // the child takes no more requests
	Parked                // the child waits, but not for requests: the master keeps it spare
)

const slotSize = 64

// The table's layout is shared by processes: its size must not drift.
var _ [slotSize - unsafe.Sizeof(slot{})]struct{}
var _ [unsafe.Sizeof(slot{}) - slotSize]struct{}

type slot struct {
	pid     atomic.Int32
	state   atomic.Uint32 // for the alarm slot: 1 while armed
	served  atomic.Uint32
	waiting atomic.Int32  // the child's waits for its client in progress
	begun   atomic.Uint64 // requests begun
	waits   atomic.Uint32 // the child's waits for its client begun
	rssKiB  atomic.Uint32 // the child's resident set size, in KiB; 0 unknown

	// The client of the request in hand, under a sequence lock: the
	// child makes remoteSeq odd while it writes.
	remoteSeq  atomic.Uint32
	remotePort atomic.Uint32    // the port, and 1<<16 if the address is set
	remoteIP   [2]atomic.Uint64 // IPv6, or IPv4 mapped into it
	_          uint64           // to a cache line
}

// Board is a mapping of the shared table.
type Board struct {
	mem   []byte
	slots []slot
	alarm *slot
}

// Create makes a table of n slots and returns it with the file that
// children map: a memory file on Linux, an unlinked temporary file
// elsewhere.
func Create(n int) (*Board, *os.File, error) {
	if n <= 0 {
		return nil, nil, errors.New("board: no slots")
	}
	f, err := newFile()
	if err != nil {
		return nil, nil, err
	}
	if err := f.Truncate(int64((n + 1) * slotSize)); err != nil {
		f.Close()
		return nil, nil, err
	}
	b, err := mmap(f, n)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return b, f, nil
}

// Open maps the table in the file f, which holds n slots.
func Open(f *os.File, n int) (*Board, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if n <= 0 || fi.Size() != int64((n+1)*slotSize) {
		return nil, fmt.Errorf("board: file of %d bytes for %d slots", fi.Size(), n)
	}
	return mmap(f, n)
}

func mmap(f *os.File, n int) (*Board, error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var mem []byte
	var merr error
	if err := raw.Control(func(fd uintptr) {
		mem, merr = unix.Mmap(int(fd), 0, (n+1)*slotSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	}); err != nil {
		return nil, err
	}
	if merr != nil {
		return nil, os.NewSyscallError("mmap", merr)
	}
	// The mapping is page-aligned and slots are 32 bytes: every field is
	// aligned for atomic access.
	all := unsafe.Slice((*slot)(unsafe.Pointer(&mem[0])), n+1)
	return &Board{mem: mem, slots: all[:n], alarm: &all[n]}, nil
}

// Close unmaps the table.
func (b *Board) Close() error { return unix.Munmap(b.mem) }

// Len is the number of slots.
func (b *Board) Len() int { return len(b.slots) }

// Reset makes slot i, which the master has chosen as free, the slot of a
// new child.
func (b *Board) Reset(i int) {
	s := &b.slots[i]
	s.state.Store(Free)
	s.served.Store(0)
	s.begun.Store(0)
	s.waiting.Store(0)
	s.waits.Store(0)
	s.rssKiB.Store(0)
	s.remotePort.Store(0)
	s.pid.Store(-1)
}

// Release frees slot i, once its child has exited.
func (b *Board) Release(i int) {
	s := &b.slots[i]
	s.state.Store(Free)
	s.pid.Store(0)
}

// SetPID records the pid of the child in slot i, which the master learns
// only after the child started.
func (b *Board) SetPID(i, pid int) { b.slots[i].pid.Store(int32(pid)) }

// SetIdle marks slot i idle, having served served requests.
func (b *Board) SetIdle(i int, served int) {
	s := &b.slots[i]
	s.served.Store(uint32(served))
	s.state.Store(Idle)
}

// SetBusy marks slot i busy with a new request.
func (b *Board) SetBusy(i int) {
	s := &b.slots[i]
	s.begun.Add(1)
	s.state.Store(Busy)
}

// SetLeaving marks slot i as a child that takes no more requests, having
// served served.
func (b *Board) SetLeaving(i int, served int) {
	s := &b.slots[i]
	s.served.Store(uint32(served))
	s.state.Store(Leaving)
}

// State returns the state of slot i, its served count, and how many
// requests it has begun: a request that is still running when the count is
// read twice is the same one.
func (b *Board) State(i int) (state uint32, served int, begun uint64) {
	s := &b.slots[i]
	return s.state.Load(), int(s.served.Load()), s.begun.Load()
}

// SetParked marks slot i as a child kept out of the listener's queue.
func (b *Board) SetParked(i int, served int) {
	s := &b.slots[i]
	s.served.Store(uint32(served))
	s.state.Store(Parked)
}

// SetRSS records the resident set size of the child in slot i, in bytes.
// The slot holds KiB, up to 4 TiB.
func (b *Board) SetRSS(i int, bytes int64) {
	b.slots[i].rssKiB.Store(uint32(min(max(bytes, 0)>>10, 1<<32-1)))
}

// SetRemote notes the client of slot i's request in hand: ip (16 bytes,
// IPv4 mapped) and port; ok false for a client without an IP address.
func (b *Board) SetRemote(i int, ip [16]byte, port uint16, ok bool) {
	s := &b.slots[i]
	s.remoteSeq.Add(1)
	s.remoteIP[0].Store(binary.BigEndian.Uint64(ip[:8]))
	s.remoteIP[1].Store(binary.BigEndian.Uint64(ip[8:]))
	p := uint32(port)
	if ok {
		p |= 1 << 16
	}
	s.remotePort.Store(p)
	s.remoteSeq.Add(1)
}

// Remote returns the client that slot i's child last noted; ok is false if
// it has none, or is noting another just now.
func (b *Board) Remote(i int) (ip [16]byte, port uint16, ok bool) {
	s := &b.slots[i]
	seq := s.remoteSeq.Load()
	binary.BigEndian.PutUint64(ip[:8], s.remoteIP[0].Load())
	binary.BigEndian.PutUint64(ip[8:], s.remoteIP[1].Load())
	p := s.remotePort.Load()
	if seq%2 == 1 || s.remoteSeq.Load() != seq {
		return ip, 0, false
	}
	return ip, uint16(p), p&(1<<16) != 0
}

// RSS returns the resident set size of the child in slot i, in bytes, as
// the child last recorded it; 0 if it has not.
func (b *Board) RSS(i int) int64 { return int64(b.slots[i].rssKiB.Load()) << 10 }

// Waiting returns the counters of slot i's waits for its client, in
// progress and begun, which the child's connection keeps as it waits.
func (b *Board) Waiting(i int) (inProgress *atomic.Int32, begun *atomic.Uint32) {
	return &b.slots[i].waiting, &b.slots[i].waits
}

// WaitsForClient reports whether the child in slot i waits for its client
// now: it is busy, but another child would not make its client faster.
func (b *Board) WaitsForClient(i int) bool { return b.slots[i].waiting.Load() > 0 }

// ClientWait reports whether the child in slot i waits for its client now,
// and how many such waits it has begun: a wait that is still the same one
// a while later is a client that sends nothing.
func (b *Board) ClientWait(i int) (waiting bool, begun uint32) {
	s := &b.slots[i]
	return s.waiting.Load() > 0, s.waits.Load()
}

// Alarm settings: when the child that takes a request wakes the master.
const (
	AlarmOff    uint32 = iota
	AlarmAny           // at the next request: nothing was busy
	AlarmNoIdle        // at a request that leaves no child idle
)

// Arm sets the alarm; the first child to set it off disarms it.
func (b *Board) Arm(when uint32) { b.alarm.state.Store(when) }

// Alarm reports whether the caller, a child that has just taken a request,
// is the one to wake the master: the alarm is set for this request, and no
// other child got to it first. A child calls it for every request: while
// the alarm is off it costs one load.
func (b *Board) Alarm() bool {
	when := b.alarm.state.Load()
	switch {
	case when == AlarmOff:
		return false
	case when == AlarmNoIdle && b.anyIdle():
		return false
	}
	return b.alarm.state.CompareAndSwap(when, AlarmOff)
}

func (b *Board) anyIdle() bool {
	for i := range b.slots {
		if b.slots[i].state.Load() == Idle {
			return true
		}
	}
	return false
}
