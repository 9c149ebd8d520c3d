package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prefork-go/prefork/cmd/preforkbench/internal/iobackend"
)

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// The plain server's io handler holds one backend connection per client
// connection, for all the requests on it, and closes it with it.
func TestPlainIOBackendPerConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	backendLn := &countingListener{Listener: ln}
	go iobackend.Serve(backendLn)
	t.Cleanup(func() { backendLn.Close() })

	b := &connBackends{addr: backendLn.Addr().String()}
	srv := httptest.NewUnstartedServer(ioHandler{backend: b.of})
	srv.Config.ConnContext = b.open
	srv.Config.ConnState = b.closeOn
	srv.Start()
	t.Cleanup(srv.Close)

	const clients, requests = 2, 3
	for range clients {
		// A transport of its own for each client: a connection of its own.
		tr := &http.Transport{}
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for range requests {
			resp, err := c.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
				t.Fatalf("%s %q %v, want 200 OK %q", resp.Status, got, err, body)
			}
		}
		tr.CloseIdleConnections()
	}
	if got := backendLn.accepted.Load(); got != clients {
		t.Errorf("%d backend connections, want %d", got, clients)
	}

	// Each client connection's end closes its backend connection.
	deadline := time.Now().Add(5 * time.Second)
	for {
		open := 0
		b.conns.Range(func(any, any) bool { open++; return true })
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backend clients left after their connections closed", open)
		}
		time.Sleep(time.Millisecond)
	}
}
