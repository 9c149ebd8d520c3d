package preforkhttp_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prefork-go/prefork/internal/tooltest"
	"github.com/stretchr/testify/require"
)

// TestCurl drives the pool with curl, a client that net/http's own tests do
// not use, for what HTTP/1 clients do to a server: keep-alive, chunked
// uploads, Expect: 100-continue and HTTP/1.0.
func TestCurl(t *testing.T) {
	curl := tooltest.Program(t, "curl", "curl")
	p := startPool(t, poolConfig{})
	body := bytes.Repeat([]byte("prefork serves one connection per child\n"), 5000) // 200 kB
	upload := filepath.Join(t.TempDir(), "upload")
	require.NoError(t, os.WriteFile(upload, body, 0o600))
	run := func(t *testing.T, args ...string) (stdout, stderr string) {
		t.Helper()
		var out, errOut bytes.Buffer
		cmd := exec.Command(curl, append([]string{"--silent", "--show-error", "--max-time", "10"}, args...)...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		require.NoError(t, cmd.Run(), "curl %v: %s", args, errOut.String())
		return out.String(), errOut.String()
	}

	t.Run("keep-alive", func(t *testing.T) {
		out, _ := run(t, "--write-out", "\n", p.url+"/pid", p.url+"/pid")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 2)
		pid1, n1 := pidOf(t, lines[0])
		pid2, n2 := pidOf(t, lines[1])
		require.Equal(t, pid1, pid2, "curl's second request on its kept-alive connection went to another child")
		require.Equal(t, n1+1, n2)
	})
	t.Run("chunked upload", func(t *testing.T) {
		out, _ := run(t, "--header", "Transfer-Encoding: chunked", "--data-binary", "@"+upload, p.url+"/echo")
		require.Len(t, out, len(body))
		require.True(t, out == string(body), "the echo differs from the upload")
	})
	t.Run("Expect: 100-continue", func(t *testing.T) {
		out, errOut := run(t, "--verbose", "--header", "Expect: 100-continue", "--data-binary", "@"+upload, p.url+"/echo")
		require.Contains(t, errOut, "HTTP/1.1 100 Continue")
		require.Len(t, out, len(body))
		require.True(t, out == string(body), "the echo differs from the upload")
	})
	t.Run("HTTP/1.0", func(t *testing.T) {
		out, _ := run(t, "--http1.0", "--include", p.url+"/pid")
		require.True(t, strings.HasPrefix(out, "HTTP/1.0 200 OK\r\n"), "%q", out)
		require.NotContains(t, out, "Keep-Alive", "an HTTP/1.0 client that did not ask for keep-alive gets none")
	})
}
