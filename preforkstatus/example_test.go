package preforkstatus_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforkstatus"
)

type echo struct{}

func (echo) ProcessRequest(ctx context.Context, r *prefork.Request) error {
	_, err := io.Copy(r.Conn, r.Conn)
	return err
}

// A pool with its status page on a loopback address: curl
// 127.0.0.1:9001/?full for people, /metrics for Prometheus. Only the
// master serves the page; the code before Run runs in every child too.
func ExampleHandler() {
	m := &prefork.Manager{Addr: "127.0.0.1:9000", NewChild: func() prefork.Child { return echo{} }}
	if !prefork.IsChild() {
		ln, err := net.Listen("tcp", "127.0.0.1:9001")
		if err != nil {
			log.Fatal(err)
		}
		page := &http.Server{Handler: preforkstatus.Handler(m), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := page.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				log.Print(err)
			}
		}()
		defer page.Close()
	}
	if err := m.Run(context.Background()); err != nil {
		log.Print(err)
	}
}
