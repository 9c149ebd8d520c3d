package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforkhttp"
	"github.com/prefork-go/prefork/preforktest"
	"github.com/stretchr/testify/require"
)

// get sends one request on conn and returns the response's status and body.
func get(t *testing.T, conn io.ReadWriter, in *bufio.Reader, path string) (int, string) {
	t.Helper()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", path)
	resp, err := http.ReadResponse(in, nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestService(t *testing.T) {
	mux := newMux()
	s := preforktest.NewServer(t, &prefork.Manager{NewChild: func() prefork.Child { return &preforkhttp.Server{Handler: mux} }})
	conn := s.Dial(t)
	in := bufio.NewReader(conn)

	rendered := func() (n int) {
		code, body := get(t, conn, in, "/stats")
		require.Equal(t, http.StatusOK, code)
		_, err := fmt.Sscanf(body, "child %d has rendered %d texts", new(int), &n)
		require.NoError(t, err, "%q", body)
		return n
	}
	before := rendered()
	code, body := get(t, conn, in, "/render?text=prefork")
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "PREFORK\n", body)
	require.Equal(t, before+1, rendered())
}

func TestCrashEndsTheChild(t *testing.T) {
	s := preforktest.NewServer(t, &prefork.Manager{NewChild: func() prefork.Child { return &preforkhttp.Server{Handler: newMux()} }})
	conn := s.Dial(t)
	code, body := get(t, conn, bufio.NewReader(conn), "/crash")
	require.Equal(t, http.StatusInternalServerError, code)
	require.Equal(t, "Internal Server Error\n", body)

	// In a pool the master would now start another child.
	var panicked *prefork.PanicError
	require.True(t, errors.As(s.Close(), &panicked))
	require.Equal(t, "ServeHTTP", panicked.Hook)
}
