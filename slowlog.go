package prefork

import (
	"runtime"
	"sync/atomic"
	"time"
)

// The slow-request log: when a request has run for Manager.SlowRequest, the
// master asks its child (wire.Slow), and the child's goroutine that reads
// the master's records logs the stacks of all its goroutines, the handler's
// among them, while the request goes on.

// inHand is the request a child serves, as the goroutine that reads the
// master's records sees it.
type inHand struct {
	req   atomic.Pointer[Request]
	seq   atomic.Uint32 // the low 32 bits of the board's count of requests begun
	since atomic.Int64  // when it began, in Unix nanoseconds
}

func (h *inHand) begin(r *Request, seq uint32) {
	h.seq.Store(seq)
	h.since.Store(time.Now().UnixNano())
	h.req.Store(r)
}

func (h *inHand) end() { h.req.Store(nil) }

// maxStacks bounds the dump: a child that runs more goroutines than that
// holds is cut short, which the log says.
const maxStacks = 1 << 20

// logSlow logs the stacks of the child's goroutines if request seq is still
// in hand.
func (w *worker) logSlow(seq uint32) {
	r := w.inHand.req.Load()
	if r == nil || w.inHand.seq.Load() != seq || w.inHand.req.Load() != r {
		return // over already
	}
	running := time.Since(time.Unix(0, w.inHand.since.Load()))
	buf := make([]byte, 64<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) || len(buf) >= maxStacks {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	w.log.Warn("prefork: slow request", "remote", addrString(r.RemoteAddr), "running", running.Round(time.Millisecond),
		"truncated", len(buf) >= maxStacks, "stacks", string(buf))
}
