// Command echo is a prefork echo server. Over TCP (or a Unix stream socket)
// each child serves one connection at a time and writes back every line it
// reads, until the client closes the connection; over UDP (or unixgram) it
// sends every datagram back to its sender.
//
//	go run ./examples/echo -addr 127.0.0.1:9000
//	go run ./examples/echo -addr 127.0.0.1:9000 -proto udp -reuse-port
//	go run ./examples/echo -addr 127.0.0.1:9000 -also udp:127.0.0.1:9000 -also unix:/tmp/echo.sock
//
// and from another terminal:
//
//	nc 127.0.0.1 9000
//	nc -u 127.0.0.1 9000
//	nc -U /tmp/echo.sock
//
// With -also, one pool serves several sockets: each child serves all of
// them, one client at a time.
//
// SIGINT (^C) or SIGTERM stops it gracefully; a second one stops it at once.
//
// Started by systemd with sockets (socket activation: LISTEN_FDS), it
// serves those, whatever their kind, and ignores -addr and -proto (but not
// -also, which makes it bind the sockets it names); to try it without
// systemd:
//
//	go build -o /tmp/echo ./examples/echo
//	systemd-socket-activate -l /tmp/echo.sock /tmp/echo
//
// (not through go run, whose child would not be the process LISTEN_PID
// names; systemd-socket-activate starts the program at the first
// connection).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/prefork-go/prefork"
)

type echo struct{}

func (echo) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	if r.Conn == nil { // a datagram
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
			return nil // the client closed the connection, or the stop deadline passed
		}
	}
}

func main() {
	m := &prefork.Manager{NewChild: func() prefork.Child { return echo{} }}
	flag.StringVar(&m.Addr, "addr", "127.0.0.1:9000", "address to listen on (host:port); ignored when systemd passes a socket")
	flag.StringVar(&m.Network, "proto", "tcp", `network: "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6", "unix" or "unixgram" (-addr is then a path)`)
	flag.BoolVar(&m.ReusePort, "reuse-port", false, "each child binds its own socket with SO_REUSEPORT (TCP and UDP)")
	flag.StringVar(&m.ListenerName, "listener-name", "", "of the sockets that systemd passes, the name of those to serve (FileDescriptorName=); default: all")
	var also []prefork.Socket
	flag.Func("also", "another socket to serve, as network:address, such as udp:127.0.0.1:9000 or unix:/tmp/echo.sock (repeat for more)", func(v string) error {
		network, addr, ok := strings.Cut(v, ":")
		if !ok {
			return errors.New("want network:address")
		}
		also = append(also, prefork.Socket{Name: v, Network: network, Addr: addr})
		return nil
	})
	flag.IntVar(&m.MinServers, "min-servers", prefork.DefaultMinServers, "least number of children")
	flag.IntVar(&m.MaxServers, "max-servers", prefork.DefaultMaxServers, "most number of children")
	flag.IntVar(&m.MinSpareServers, "min-spare-servers", prefork.DefaultMinSpareServers, "least number of idle children")
	flag.IntVar(&m.MaxSpareServers, "max-spare-servers", prefork.DefaultMaxSpareServers, "most number of idle children")
	flag.IntVar(&m.MaxRequests, "max-requests", 0, "requests a child serves before it is replaced (0: no limit)")
	verbose := flag.Bool("v", false, "log children's starts and exits")
	flag.Parse()
	if len(also) > 0 { // several sockets: Sockets describes each, -addr and -proto the first
		first := prefork.Socket{Name: m.Network + ":" + m.Addr, Network: m.Network, Addr: m.Addr}
		m.Sockets = append([]prefork.Socket{first}, also...)
		m.Network, m.Addr = "", ""
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	m.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := m.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "echo:", err)
		os.Exit(1)
	}
}
