// Command httpserver is the server of the benchmark's HTTP modes. It serves
// one handler, chosen by -handler, either from a prefork pool whose children
// are preforkhttp.Servers (the default; its flags are those of
// examples/echo, TCP only) or, with -plain, from one net/http http.Server in
// one process, a goroutine per connection. Both run the same handler code,
// with the same timeouts.
//
// Handlers:
//
//	short  writes a small fixed body
//	io     asks the backend at -backend (a database stand-in that answers
//	       each line after 10 ms), then writes the same body
//
// The io handler's backend connections are held as the io mode's servers
// hold theirs: in the pool, one per child process, opened at its first
// request and kept for the child's life; under -plain, one per client
// connection, opened at its first request and closed with it.
//
// With -plain it listens on -addr (port 0: one the system picks) and logs
// "httpserver: net/http listening addr=HOST:PORT" once it accepts.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/cmd/preforkbench/internal/iobackend"
	"github.com/prefork-go/prefork/cmd/preforkbench/internal/poolflags"
	"github.com/prefork-go/prefork/preforkhttp"
)

// body is what every handler writes: small, so that the figures measure
// the serving of a request, not the copying of a body.
var body = []byte("hello, world\n")

// The body's headers, shared by every response: net/http only reads them.
var (
	contentType   = []string{"text/plain; charset=utf-8"}
	contentLength = []string{strconv.Itoa(len(body))}
)

// query is the io handler's request to the backend.
var query = []byte("query\n")

// writeBody writes body with its headers set, so that net/http neither
// sniffs the content type nor has to buffer to count the length.
func writeBody(w http.ResponseWriter) {
	h := w.Header()
	h["Content-Type"] = contentType
	h["Content-Length"] = contentLength
	w.Write(body)
}

// shortHandler writes the body and nothing else.
type shortHandler struct{}

func (shortHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { writeBody(w) }

// ioHandler asks the backend, waits for its answer, and then writes the
// body. backend returns the backend connection that serves r: the servers
// differ only in how they hold these.
type ioHandler struct {
	backend func(r *http.Request) *iobackend.Client
}

func (h ioHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, err := h.backend(r).Ask(query); err != nil {
		http.Error(w, "backend: "+err.Error(), http.StatusBadGateway)
		return
	}
	writeBody(w)
}

// child is one prefork child: a preforkhttp.Server, and for the io handler
// the backend connection of the child's process.
type child struct {
	*preforkhttp.Server
	backend *iobackend.Client // nil for the short handler
}

// Shutdown closes the backend connection as the child exits.
func (c *child) Shutdown(ctx context.Context, err error) {
	if c.backend != nil {
		c.backend.Close()
	}
}

func main() {
	m := &prefork.Manager{}
	plain := flag.Bool("plain", false, "serve from one net/http http.Server, without prefork")
	handler := flag.String("handler", "short", "the handler: short or io")
	backend := flag.String("backend", "", "io handler: address of the backend (host:port)")
	verbose := poolflags.Register(m)
	flag.Parse()
	switch {
	case *handler != "short" && *handler != "io":
		usage("-handler is short or io, not %q", *handler)
	case *handler == "io" && *backend == "":
		usage("-handler io needs -backend")
	}

	if *plain {
		servePlain(m.Addr, *handler, *backend)
		return
	}
	m.NewChild = func() prefork.Child {
		c := &child{}
		var h http.Handler = shortHandler{}
		if *handler == "io" {
			c.backend = &iobackend.Client{Addr: *backend}
			h = ioHandler{backend: func(*http.Request) *iobackend.Client { return c.backend }}
		}
		c.Server = &preforkhttp.Server{Handler: h}
		return c
	}
	m.Logger = poolflags.Logger(*verbose)
	if err := m.Run(context.Background()); err != nil {
		fatal(err)
	}
}

// servePlain serves the handler from an http.Server with preforkhttp's
// default timeouts, until it is killed.
func servePlain(addr, handler, backendAddr string) {
	srv := &http.Server{
		Handler:           shortHandler{},
		ReadHeaderTimeout: preforkhttp.DefaultReadHeaderTimeout,
		IdleTimeout:       preforkhttp.DefaultIdleTimeout,
	}
	if handler == "io" {
		b := &connBackends{addr: backendAddr}
		srv.Handler = ioHandler{backend: b.of}
		srv.ConnContext = b.open
		srv.ConnState = b.closeOn
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fatal(err)
	}
	fmt.Fprintf(os.Stderr, "httpserver: net/http listening addr=%s\n", ln.Addr())
	fatal(srv.Serve(ln))
}

// connBackends gives each client connection of the plain server a backend
// connection of its own, as the io mode's ceiling does: requests on one
// HTTP/1.1 connection are served one after another, so that connection's
// requests share it without a lock.
type connBackends struct {
	addr  string
	conns sync.Map // net.Conn -> *iobackend.Client
}

type backendKey struct{}

// open is the server's ConnContext: it makes the connection's backend
// client, which dials at its first request.
func (b *connBackends) open(ctx context.Context, c net.Conn) context.Context {
	client := &iobackend.Client{Addr: b.addr}
	b.conns.Store(c, client)
	return context.WithValue(ctx, backendKey{}, client)
}

// of returns the backend client of r's connection.
func (b *connBackends) of(r *http.Request) *iobackend.Client {
	return r.Context().Value(backendKey{}).(*iobackend.Client)
}

// closeOn is the server's ConnState: once a connection is over, it closes
// its backend connection. net/http calls it from the connection's own
// goroutine, after its last request.
func (b *connBackends) closeOn(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	if client, ok := b.conns.LoadAndDelete(c); ok {
		client.(*iobackend.Client).Close()
	}
}

func usage(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "httpserver: "+format+"\n", args...)
	os.Exit(2)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "httpserver:", err)
	os.Exit(1)
}
