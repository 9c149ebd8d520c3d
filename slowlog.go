package prefork

import (
	"runtime"
	"time"
)

// The slow-request log: when a request has run for Manager.SlowRequest, the
// master asks its child (wire.Slow), and the child's goroutine that reads
// the master's records logs the stacks of all its goroutines, the handler's
// among them, while the request goes on.

// maxStacks bounds the dump: a child that runs more goroutines than that
// holds is cut short, which the log says.
const maxStacks = 1 << 20

// logSlow logs the stacks of the child's goroutines if request seq is still
// in hand.
func (w *worker) logSlow(seq uint32) {
	r, since := w.inHand.current(seq)
	if r == nil {
		return // over already
	}
	running := time.Since(since)
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
