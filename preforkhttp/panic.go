package preforkhttp

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync/atomic"

	"github.com/prefork-go/prefork"
)

// guarded runs the user's handler and turns a panic into the end of the
// child, after the best answer the client can still get. net/http would
// recover the panic itself and go on serving from a process whose state the
// panic may have broken.
type guarded struct {
	s *Server
	h http.Handler
}

func (g *guarded) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	g.s.handlers.Add(1)
	defer g.s.handlers.Done() // last: after the panic is recorded
	tw := &trackingWriter{ResponseWriter: w}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler { // net/http's way to abort a response on purpose
			panic(v)
		}
		p := &prefork.PanicError{Hook: "ServeHTTP", Value: v, Stack: debug.Stack()}
		g.s.panicked.Store(p)
		switch {
		case tw.hijacked != nil:
			tw.hijacked.Close() // its handler will not
		case !tw.started.Load():
			h := w.Header()
			clear(h)
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Connection", "close")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "Internal Server Error\n")
		default:
			// Too late for a status: cut the response short, which net/http
			// does without logging.
			panic(http.ErrAbortHandler)
		}
	}()
	g.h.ServeHTTP(tw, req)
}

// trackingWriter notes whether the response has begun, so that a panic can
// still be answered with 500 when it has not. It passes on the optional
// interfaces of net/http's own ResponseWriter that handlers use.
type trackingWriter struct {
	http.ResponseWriter
	started  atomic.Bool // written from the handler's goroutine, read in the recovery
	hijacked net.Conn
}

func (w *trackingWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.started.Store(true) // 1xx informational responses do not begin the response
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.started.Store(true)
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps net/http's sendfile path for io.Copy to the response.
func (w *trackingWriter) ReadFrom(r io.Reader) (int64, error) {
	w.started.Store(true)
	return io.Copy(w.ResponseWriter, r)
}

func (w *trackingWriter) Flush() {
	w.started.Store(true)
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.started.Store(true)
		w.hijacked = conn
	}
	return conn, rw, err
}

// Unwrap lets http.ResponseController reach net/http's ResponseWriter.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
