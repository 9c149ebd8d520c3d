//go:build unix

package prefork

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork/internal/board"
	"github.com/prefork-go/prefork/internal/sys"
	"github.com/stretchr/testify/require"
)

// The per-request path of a child, in isolation: accept, the hooks, the
// scoreboard marks, against a plain Go server with the same handler in the
// same process. Both serve one client that connects, sends a line, reads it
// back and closes, so each op is one short connection. For the whole pool
// in separate processes, see cmd/preforkbench.

type benchEcho struct{}

func (benchEcho) ProcessRequest(_ context.Context, r *Request) error {
	return echoLines(r.Conn)
}

func echoLines(c net.Conn) error {
	in := bufio.NewReader(c)
	for {
		line, err := in.ReadSlice('\n')
		if len(line) > 0 {
			if _, err := c.Write(line); err != nil {
				return err
			}
		}
		if err != nil {
			return nil
		}
	}
}

// benchClient makes b.N connections to addr, one at a time.
func benchClient(b *testing.B, addr string) {
	line := []byte("ping\n")
	buf := make([]byte, len(line))
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(line); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkChildRequest serves connections with a child's worker: what a
// child does per request, minus the process around it. "held" waits as a
// child does when it runs no goroutines but its own (see sys.Waiter);
// "ordinary" as when a handler has started some.
func BenchmarkChildRequest(b *testing.B) {
	b.Run("held", func(b *testing.B) { benchChildRequest(b, true) })
	b.Run("ordinary", func(b *testing.B) { benchChildRequest(b, false) })
}

func benchChildRequest(b *testing.B, held bool) {
	f, addr, err := sys.Listen("tcp", "127.0.0.1:0", 128, false)
	require.NoError(b, err)
	defer f.Close()
	fd, err := sys.FD(f)
	require.NoError(b, err)

	masterEnd, childEnd, err := sys.Socketpair()
	require.NoError(b, err)
	defer masterEnd.Close()
	childFD, err := syscall.Dup(int(childEnd.Fd()))
	require.NoError(b, err)
	childEnd.Close()
	status, err := sys.InheritedStatus(childFD)
	require.NoError(b, err)
	defer status.Close()
	go io.Copy(io.Discard, masterEnd) // the master's side of the status socket

	scores, boardFile, err := board.Create(4)
	require.NoError(b, err)
	defer boardFile.Close()
	defer scores.Close()
	scores.Reset(0)

	waiter, err := sys.NewWaiter(-1)
	require.NoError(b, err)
	defer waiter.Close()
	poller, err := sys.NewPoller([]int{fd}, waiter)
	require.NoError(b, err)
	defer poller.Close()

	w := &worker{
		dispatcher: dispatcher{
			child: benchEcho{},
			hooks: findRequestHooks(benchEcho{}),
			log:   slog.New(slog.DiscardHandler),
		},
		cfg:      config{minSpare: 1, shutdownTimeout: killGrace},
		sockets:  []*socket{{network: "tcp", fd: fd}},
		status:   status,
		board:    scores,
		waiter:   waiter,
		poller:   poller,
		stopping: make(chan struct{}),
	}
	w.hardCtx, w.hardStop = context.WithCancel(context.Background())
	defer w.hardStop()
	served := make(chan error, 1)
	go func() {
		if held {
			waiter.Pin(runtime.NumGoroutine())
		}
		served <- w.serve()
	}()

	benchClient(b, addr.String())
	w.setPhase(childRetiring, nil)
	require.NoError(b, <-served)
}

// BenchmarkNetServerRequest is the same with a goroutine-per-connection
// server on package net: the baseline.
func BenchmarkNetServerRequest(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	var handlers sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			handlers.Go(func() {
				echoLines(c)
				c.Close()
			})
		}
	}()
	benchClient(b, ln.Addr().String())
	ln.Close()
	handlers.Wait()
}

// BenchmarkStats measures Manager.Stats on a pool of 20 children: a copy
// of what the master published, under its lock.
func BenchmarkStats(b *testing.B) {
	var sb statsBoard
	sb.pub.Exits = map[ExitReason]uint64{ExitMaxRequests: 40, ExitRetired: 3}
	for i := range 20 {
		sb.pub.Children = append(sb.pub.Children, ChildStats{PID: 1000 + i, State: ChildIdle, Started: time.Now()})
	}
	b.ReportAllocs()
	for b.Loop() {
		_ = sb.snapshot()
	}
}
