package prefork

import "sync"

// Contended returns a channel that is closed when the master asks this
// request to let its client go: connections wait in the listener's queue
// that no child will take soon (the pool is at MaxServers, or cannot grow
// for now), while this request waits for its client. A request that holds
// a connection idle, such as an HTTP connection kept alive between two
// requests, should then close it, so that the child serves a client that
// waits instead of one that may never send again; preforkhttp does. A
// request in the middle of an exchange can ignore it.
//
// The channel is never closed where the master cannot read the queue (Unix
// stream sockets, reuse-port mode, systems other than Linux), for
// datagrams; it is nil under RunInProcess, which has no master, and for a
// Request made by hand.
func (r *Request) Contended() <-chan struct{} {
	if r.contention == nil {
		return nil
	}
	return r.contention.wait(r.seq)
}

// contention is a child's record of the master's asks to let a client go,
// for its request in hand. The serving goroutine begins each request; the
// goroutine that reads the master's records signals; a handler's goroutines
// wait. seq numbers the child's requests from 1, as the board counts the
// requests it has begun, so that an ask meant for an earlier request is
// dropped.
type contention struct {
	mu    sync.Mutex
	seq   uint64
	asked bool
	ch    chan struct{} // made only when a handler asks for it
}

func (c *contention) begin(seq uint64) {
	c.mu.Lock()
	c.seq, c.asked, c.ch = seq, false, nil
	c.mu.Unlock()
}

// signal takes the master's ask, which names the request by the low 32
// bits of its number.
func (c *contention) signal(seq uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq != uint32(c.seq) || c.asked {
		return
	}
	c.asked = true
	if c.ch != nil {
		close(c.ch)
	}
}

func (c *contention) wait(seq uint64) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if seq != c.seq {
		return nil // the request is over
	}
	if c.ch == nil {
		c.ch = make(chan struct{})
		if c.asked {
			close(c.ch)
		}
	}
	return c.ch
}
