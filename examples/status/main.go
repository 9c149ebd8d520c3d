// Command status is the echo server with a status page: what the pool does,
// as text, JSON and Prometheus metrics, on an address of its own.
//
//	go run ./examples/status -addr 127.0.0.1:9000 -status-addr 127.0.0.1:9001
//
// and from other terminals:
//
//	nc 127.0.0.1 9000                                 # a client, held busy while it is connected
//	curl 'http://127.0.0.1:9001/?full'                # the pool, a line per child
//	curl 'http://127.0.0.1:9001/?format=json'
//	curl http://127.0.0.1:9001/metrics
//	kill -USR1 <master pid>                           # the same snapshot, in the log
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforkstatus"
)

type echo struct{}

func (echo) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	if r.Conn == nil {
		return r.Reply(r.Data)
	}
	in := bufio.NewReader(r.Conn)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			if _, werr := r.Conn.Write(line); werr != nil {
				return werr
			}
		}
		if err != nil {
			return nil
		}
	}
}

func main() {
	m := &prefork.Manager{NewChild: func() prefork.Child { return echo{} }}
	flag.StringVar(&m.Addr, "addr", "127.0.0.1:9000", "address of the echo service (host:port)")
	statusAddr := flag.String("status-addr", "127.0.0.1:9001", "address of the status page (host:port); keep it private")
	flag.StringVar(&m.Network, "proto", "tcp", `network of the echo service: "tcp", "udp", "unix", ...`)
	flag.IntVar(&m.MinServers, "min-servers", prefork.DefaultMinServers, "least number of children")
	flag.IntVar(&m.MaxServers, "max-servers", prefork.DefaultMaxServers, "most number of children")
	flag.IntVar(&m.MinSpareServers, "min-spare-servers", prefork.DefaultMinSpareServers, "least number of idle children")
	flag.IntVar(&m.MaxSpareServers, "max-spare-servers", prefork.DefaultMaxSpareServers, "most number of idle children")
	flag.IntVar(&m.MaxRequests, "max-requests", 0, "requests a child serves before it is replaced (0: no limit)")
	flag.Parse()
	m.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))

	// This code runs in every process: only the master serves the page.
	if !prefork.IsChild() {
		ln, err := net.Listen("tcp", *statusAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "status:", err)
			os.Exit(1)
		}
		page := &http.Server{Handler: preforkstatus.Handler(m), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := page.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				m.Logger.Error("status page", "err", err)
			}
		}()
		defer page.Close()
		m.Logger.Info("status page", "addr", ln.Addr().String())
	}
	if err := m.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "status:", err)
		os.Exit(1)
	}
}
