//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// runCeiling is the ceiling server: the echo protocol of examples/echo
// without prefork, a goroutine per TCP connection and one goroutine for all
// UDP datagrams. It serves until the benchmark kills it (it runs with a
// parent-death signal, so it cannot outlive the benchmark).
func runCeiling() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "ceiling: listening tcp=%s udp=%s\n", ln.Addr(), pc.LocalAddr())

	go serveUDP(pc)
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
		go serveConn(conn)
	}
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
