package preforktest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforktest"
)

// shout answers a line in capitals.
type shout struct{}

func (shout) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	line, err := bufio.NewReader(r.Conn).ReadString('\n')
	if err != nil {
		return err
	}
	return r.Reply([]byte(strings.ToUpper(line)))
}

// A test serves its Child with NewServer, which closes the Server when the
// test ends; this Example, which has no testing.TB, uses Start.
func ExampleStart() {
	s, err := preforktest.Start(&prefork.Manager{NewChild: func() prefork.Child { return shout{} }})
	if err != nil {
		log.Fatal(err)
	}
	conn, err := net.Dial(s.Network, s.Addr.String())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintln(conn, "hello")
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(reply)
	if err := s.Close(); err != nil {
		log.Fatal(err)
	}
	// Output: HELLO
}

// broken cannot start.
type broken struct{ shout }

func (broken) Initialize(ctx context.Context) error { panic("no configuration") }

// Close returns what ended the run: here a panic in Initialize, which ends
// a child process as it ends the Server.
func ExampleServer_Close() {
	s, err := preforktest.Start(&prefork.Manager{
		Logger:   slog.New(slog.DiscardHandler), // a panic is logged, with its stack
		NewChild: func() prefork.Child { return broken{} },
	})
	if err != nil {
		log.Fatal(err)
	}
	err = s.Close()
	var p *prefork.PanicError
	if errors.As(err, &p) {
		fmt.Printf("panic in %s: %v\n", p.Hook, p.Value)
	}
	// Output: panic in Initialize: no configuration
}
