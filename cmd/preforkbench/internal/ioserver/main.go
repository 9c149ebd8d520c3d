// Command ioserver is the prefork server of the benchmark's io mode: a
// handler that waits on a database. Each child holds one connection to the
// backend at -backend (a database stand-in that answers each line after
// 10 ms), opened at its first request and opened again if it breaks; for
// each line a client sends, the child asks the backend and writes the
// answer back to the client. Its flags are those of examples/echo, TCP only.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/cmd/preforkbench/internal/iobackend"
	"github.com/prefork-go/prefork/cmd/preforkbench/internal/poolflags"
)

// relay is one child: its backend connection lives as long as the child
// process, as a database connection of a prefork server does.
type relay struct {
	backend iobackend.Client
}

func (c *relay) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	if r.Conn == nil {
		return errors.New("ioserver serves TCP only")
	}
	return iobackend.Relay(r.Conn, &c.backend)
}

// Shutdown closes the backend connection as the child exits.
func (c *relay) Shutdown(ctx context.Context, err error) {
	c.backend.Close()
}

func main() {
	m := &prefork.Manager{}
	backend := flag.String("backend", "", "address of the backend (host:port)")
	verbose := poolflags.Register(m)
	flag.Parse()
	if *backend == "" {
		fmt.Fprintln(os.Stderr, "ioserver: -backend is required")
		os.Exit(2)
	}
	m.NewChild = func() prefork.Child { return &relay{backend: iobackend.Client{Addr: *backend}} }

	m.Logger = poolflags.Logger(*verbose)
	if err := m.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "ioserver:", err)
		os.Exit(1)
	}
}
