//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/prefork-go/prefork/cmd/preforkbench/internal/iobackend"
)

// runCeiling is the ceiling server: the echo protocol of examples/echo
// without prefork, a goroutine per TCP connection and one goroutine for all
// UDP datagrams; and, if the environment gives it a backend, the io mode's
// protocol on a port of its own, a goroutine per connection too. It serves
// until the benchmark kills it (it runs with a parent-death signal, so it
// cannot outlive the benchmark).
func runCeiling() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("ceiling", err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		fatal("ceiling", err)
	}
	ioAddr := "none"
	if backend := os.Getenv(ceilingBackendEnv); backend != "" {
		ioLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fatal("ceiling", err)
		}
		ioAddr = ioLn.Addr().String()
		go accept(ioLn, func(conn net.Conn) { serveIOConn(conn, backend) })
	}
	fmt.Fprintf(os.Stderr, "ceiling: listening tcp=%s udp=%s io=%s\n", ln.Addr(), pc.LocalAddr(), ioAddr)

	go serveUDP(pc)
	accept(ln, serveConn)
}

// runBackend is the io mode's backend, the database stand-in. Like the
// ceiling, it serves until the benchmark kills it.
func runBackend() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal("backend", err)
	}
	fmt.Fprintf(os.Stderr, "backend: listening tcp=%s\n", ln.Addr())
	iobackend.Serve(ln)
}

func fatal(name string, err error) {
	fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
	os.Exit(1)
}

// accept serves each connection of ln in a goroutine of its own.
func accept(ln net.Listener, serve func(net.Conn)) {
	for {
		conn, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of descriptors, say: the clients count the failures.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		go serve(conn)
	}
}

// serveIOConn serves one connection of the io mode. It opens a backend
// connection of its own as the client connection starts, and closes it
// with it: a goroutine-per-connection server with no pool of backend
// connections. Apart from that, it runs the same code as the prefork
// children of the io mode.
func serveIOConn(conn net.Conn, backendAddr string) {
	defer conn.Close()
	backend := &iobackend.Client{Addr: backendAddr}
	defer backend.Close()
	if err := backend.Dial(); err != nil {
		return // the client sees the connection close, and counts an error
	}
	iobackend.Relay(conn, backend)
}

// serveConn writes back every line it reads, as examples/echo does: one
// write per line.
func serveConn(conn net.Conn) {
	defer conn.Close()
	in := bufio.NewReader(conn)
	for {
		line, err := in.ReadBytes('\n')
		if len(line) > 0 {
			if _, err := conn.Write(line); err != nil {
				return
			}
		}
		if err != nil {
			return // the client closed the connection
		}
	}
}

// serveUDP sends every datagram back to its sender.
func serveUDP(pc net.PacketConn) {
	buf := make([]byte, 64<<10) // examples/echo's children read up to 64 KiB too
	for {
		n, from, err := pc.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		pc.WriteTo(buf[:n], from)
	}
}
