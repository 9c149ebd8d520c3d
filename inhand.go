package prefork

import (
	"sync"
	"time"
)

// The request a child serves, as the goroutine that reads the master's
// records sees it. The master names a request by the board's count of the
// requests its child has begun (32 bits of it on the wire), and asks about
// the one in hand: to let its client go (Request.Contended), or to log the
// child's stacks because it runs long (the slow log). An ask for a request
// that is over is dropped.

// Contended returns a channel that is closed when the master asks this
// request to let its client go: connections wait in the listener's queue
// that no child will take soon (the pool is at MaxServers, or cannot grow
// for now), while this request waits for its client. A request that holds
// a connection idle, such as an HTTP connection kept alive between two
// requests, should then close it, so that the child serves a client that
// waits instead of one that may never send again; preforkhttp does. A
// request in the middle of an exchange can ignore it.
//
// The master asks again at each later wait for the client: each ask closes
// the channel Contended last returned (or, if none is open, the next one
// it returns), so a handler calls it again after it has acted on one.
// Watch it from one goroutine: a call after an ask returns a new channel.
//
// The channel is never closed where the master cannot read the queue
// (reuse-port mode, systems other than Linux), nor for datagrams; it is nil
// under RunInProcess, which has no master, and for a Request made by hand.
func (r *Request) Contended() <-chan struct{} {
	if r.inHand == nil {
		return nil
	}
	return r.inHand.contended(r.seq)
}

// inHand is a child's record of its request in hand. The serving goroutine
// begins and ends each request; the goroutine that reads the master's
// records asks about it; a handler's goroutines wait on Contended.
type inHand struct {
	mu    sync.Mutex
	req   *Request // nil between requests
	seq   uint64   // its number in the child, from 1, as the board counts
	since time.Time
	asked bool          // the master asked to let its client go, and no channel told it yet
	ch    chan struct{} // made only when a handler asks for Contended; nil once closed
}

// begin makes r, number seq, the request in hand; timed notes since when.
func (h *inHand) begin(r *Request, seq uint64, timed bool) {
	r.inHand, r.seq = h, seq
	h.mu.Lock()
	defer h.mu.Unlock()
	h.req, h.seq, h.asked, h.ch = r, seq, false, nil
	if timed {
		h.since = time.Now()
	}
}

func (h *inHand) end() {
	h.mu.Lock()
	h.req = nil
	h.mu.Unlock()
}

// current returns the request in hand if the master's seq (its low 32 bits)
// names it, and since when it runs.
func (h *inHand) current(seq uint32) (*Request, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.req == nil || uint32(h.seq) != seq {
		return nil, time.Time{}
	}
	return h.req, h.since
}

// letGo takes the master's ask to let the client of request seq go. The
// master asks once per wait for the client; each ask closes the channel
// Contended last gave, or the next one it gives.
func (h *inHand) letGo(seq uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.req == nil || uint32(h.seq) != seq {
		return
	}
	if h.ch == nil {
		h.asked = true
		return
	}
	close(h.ch)
	h.ch = nil
}

func (h *inHand) contended(seq uint64) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq != h.seq {
		return nil // the request is over
	}
	if h.asked {
		h.asked = false
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if h.ch == nil {
		h.ch = make(chan struct{})
	}
	return h.ch
}
