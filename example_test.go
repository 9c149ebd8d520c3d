package prefork_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/prefork-go/prefork"
)

type echoChild struct{}

func (echoChild) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	_, err := io.Copy(r.Conn, r.Conn)
	return err
}

// A prefork echo server. The same program runs as the master and as each
// child: Run tells which it is.
func ExampleManager() {
	m := &prefork.Manager{
		Addr:     "127.0.0.1:9000",
		NewChild: func() prefork.Child { return echoChild{} },
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// An upgrade asked from a hook: SIGHUP upgrades too, as SIGUSR2 does, and
// the outcome is logged. Upgrade waits for the new pool, so the hook, which
// runs on the master's loop, calls it from a goroutine of its own.
func ExampleManager_Upgrade() {
	m := &prefork.Manager{Addr: "127.0.0.1:9000", NewChild: func() prefork.Child { return echoChild{} }}
	m.Hooks.Signal = func(sig os.Signal, stopping bool) prefork.SignalAction {
		if sig == syscall.SIGHUP && !stopping {
			go func() {
				if err := m.Upgrade(context.Background()); err != nil {
					log.Print(err) // the old pool serves on
				}
			}()
		}
		return prefork.DefaultSignal(sig, stopping)
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// multi answers on every socket of its pool, and tells them apart by name.
type multi struct{}

func (multi) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	switch r.SocketName {
	case "admin":
		return r.Reply([]byte("admin console\n"))
	case "dns":
		return r.Reply(r.Data) // a datagram: Conn is nil
	}
	_, err := io.Copy(r.Conn, r.Conn)
	return err
}

// One pool serving several sockets: IPv4 and IPv6 on one port, a Unix
// socket for local administration, and UDP. Each child serves all of them,
// one request at a time.
func ExampleManager_sockets() {
	m := &prefork.Manager{
		Sockets: []prefork.Socket{
			{Name: "web", Network: "tcp4", Addr: "127.0.0.1:9000"},
			{Name: "web6", Network: "tcp6", Addr: "[::1]:9000"},
			{Name: "admin", Network: "unix", Addr: "/run/myserver/admin.sock"},
			{Name: "dns", Network: "udp", Addr: "127.0.0.1:9053"},
		},
		NewChild: func() prefork.Child { return multi{} },
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// greeter shows the optional hooks: each is an interface of its own.
type greeter struct {
	motd string
}

// Initialize runs once in each child, before its first request.
func (g *greeter) Initialize(ctx context.Context) error {
	b, err := os.ReadFile("/etc/motd")
	g.motd = string(b)
	return err
}

// AllowDeny refuses clients from outside the loopback network.
func (g *greeter) AllowDeny(ctx context.Context, r *prefork.Request) bool {
	addr, ok := r.RemoteAddr.(*net.TCPAddr)
	return ok && addr.IP.IsLoopback()
}

// RequestDenied tells a refused client why.
func (g *greeter) RequestDenied(ctx context.Context, r *prefork.Request) {
	fmt.Fprintln(r.Conn, "go away")
}

func (g *greeter) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	_, err := io.WriteString(r.Conn, g.motd)
	return err
}

// A Child with optional hooks, and the master's hooks: a SIGHUP reloads the
// configuration and leaves the rest to the default handling.
func ExampleManager_hooks() {
	m := &prefork.Manager{
		Addr:        "127.0.0.1:9000",
		MinServers:  2,
		MaxServers:  50,
		MaxRequests: 1000,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, nil)),
		NewChild:    func() prefork.Child { return &greeter{} },
		Hooks: prefork.ManagerHooks{
			PostBind: func(ctx context.Context, addr net.Addr) error {
				log.Printf("serving on %s", addr)
				return nil
			},
			Signal: func(sig os.Signal, stopping bool) prefork.SignalAction {
				if sig == syscall.SIGHUP {
					log.Print("reloading configuration")
				}
				return prefork.DefaultSignal(sig, stopping)
			},
		},
	}
	if !prefork.IsChild() {
		log.Printf("master %d starting", os.Getpid()) // once, not once per child
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

type lineChild struct{}

// A handler of long-lived connections ends at a clean point, while it waits
// for the next line, once a graceful stop has begun.
func (lineChild) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-r.Stopping():
			r.Conn.SetReadDeadline(time.Now()) // ends the wait for a line
		case <-done:
		}
	}()
	lines := bufio.NewScanner(r.Conn)
	for lines.Scan() {
		fmt.Fprintln(r.Conn, lines.Text())
	}
	select {
	case <-r.Stopping():
		fmt.Fprintln(r.Conn, "server going down, bye")
		return nil
	default:
		return lines.Err()
	}
}

func ExampleRequest_Stopping() {
	m := &prefork.Manager{Addr: "127.0.0.1:9000", NewChild: func() prefork.Child { return lineChild{} }}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// Stop the pool from code, as net/http's Server.Shutdown does: requests in
// flight get up to ten seconds, then the children that are left are killed.
func ExampleManager_Shutdown() {
	m := &prefork.Manager{Addr: "127.0.0.1:9000", NewChild: func() prefork.Child { return echoChild{} }}
	go func() {
		time.Sleep(time.Hour) // or until something says to stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			log.Printf("children killed: %v", err)
		}
	}()
	if err := m.Run(context.Background()); !errors.Is(err, prefork.ErrManagerClosed) {
		log.Fatal(err)
	}
}

// Replace every child after a configuration change, without failing a
// request: new children read the new configuration in Initialize.
func ExampleManager_RestartChildren() {
	m := &prefork.Manager{
		Addr:     "127.0.0.1:9000",
		NewChild: func() prefork.Child { return &greeter{} },
		Hooks: prefork.ManagerHooks{
			Signal: func(sig os.Signal, stopping bool) prefork.SignalAction {
				if sig == syscall.SIGHUP {
					return prefork.ActionRestart // as m.RestartChildren() would
				}
				return prefork.DefaultSignal(sig, stopping)
			},
		},
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}
