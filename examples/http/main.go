// Command http serves a small HTTP service from a prefork pool, with a
// handler that is not safe for concurrent use: it keeps its state in
// package variables, as a C library with global state would (an image
// codec, an embedded interpreter). Under a plain net/http server two
// requests at once would race on that state; in the pool each child
// process serves one connection at a time, so they never do.
//
//	go run ./examples/http -addr 127.0.0.1:8080
//
// and from another terminal:
//
//	curl 'http://127.0.0.1:8080/render?text=hello'
//	curl http://127.0.0.1:8080/stats
//	curl http://127.0.0.1:8080/crash      # the child answers 500 and is replaced
//
// SIGINT (^C) or SIGTERM stops it gracefully; a second one stops it at once.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforkhttp"
)

// The "library": one scratch buffer and one counter for the whole process,
// used without a lock.
var (
	scratch  []byte
	rendered int
)

// render upper-cases text in the shared scratch buffer, the way a library
// with global state works: correct only if no other call runs meanwhile.
func render(text string) string {
	scratch = append(scratch[:0], text...)
	for i, c := range scratch {
		if 'a' <= c && c <= 'z' {
			scratch[i] = c - 'a' + 'A'
		}
	}
	rendered++
	return string(scratch)
}

func newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /render", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, render(r.URL.Query().Get("text")))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "child %d has rendered %d texts\n", os.Getpid(), rendered)
	})
	mux.HandleFunc("GET /crash", func(w http.ResponseWriter, r *http.Request) {
		panic("the library's state is broken") // the client gets 500; the child is replaced
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, strings.TrimSpace(`
try /render?text=hello, /stats or /crash`))
	})
	return mux
}

func main() {
	mux := newMux()
	m := &prefork.Manager{NewChild: func() prefork.Child { return &preforkhttp.Server{Handler: mux} }}
	flag.StringVar(&m.Addr, "addr", "127.0.0.1:8080", "address to listen on (host:port)")
	flag.IntVar(&m.MinServers, "min-servers", prefork.DefaultMinServers, "least number of children")
	flag.IntVar(&m.MaxServers, "max-servers", prefork.DefaultMaxServers, "most number of children")
	flag.IntVar(&m.MinSpareServers, "min-spare-servers", prefork.DefaultMinSpareServers, "least number of idle children")
	flag.IntVar(&m.MaxSpareServers, "max-spare-servers", prefork.DefaultMaxSpareServers, "most number of idle children")
	flag.IntVar(&m.MaxRequests, "max-requests", 0, "connections a child serves before it is replaced (0: no limit)")
	verbose := flag.Bool("v", false, "log children's starts and exits")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	m.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := m.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
}
