package preforkhttp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforkhttp"
	"github.com/prefork-go/prefork/preforktest"
)

// An HTTP server on a prefork pool: each child process serves one
// connection at a time with net/http.
func ExampleServer() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from process %d\n", os.Getpid())
	})
	m := &prefork.Manager{
		Addr:     "127.0.0.1:8080",
		NewChild: func() prefork.Child { return &preforkhttp.Server{Handler: mux} },
	}
	if err := m.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// A handler's test serves it as a child would, in the test's own process
// (see package preforktest): no fork, no master.
func ExampleServer_preforktest() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s\n", r.URL.Query().Get("name"))
	})
	s, err := preforktest.Start(&prefork.Manager{
		NewChild: func() prefork.Child { return &preforkhttp.Server{Handler: mux} },
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Get("http://" + s.Addr.String() + "/hello?name=pool")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(resp.Status, ": ", string(body))
	// Output: 200 OK: hello, pool
}
