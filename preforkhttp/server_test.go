package preforkhttp_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pidOf parses the "pid count" body of /pid.
func pidOf(t *testing.T, body string) (pid, count int) {
	t.Helper()
	_, err := fmt.Sscan(body, &pid, &count)
	require.NoError(t, err, "body %q", body)
	return pid, count
}

func TestKeepAliveStaysWithOneChild(t *testing.T) {
	p := startPool(t, poolConfig{})
	client := newClient()
	first := 0
	for i := range 5 {
		code, body := get(t, client, p.url+"/pid")
		require.Equal(t, http.StatusOK, code)
		pid, count := pidOf(t, body)
		if i == 0 {
			first = pid
		}
		// One connection is one child's, and the child's state is its own.
		require.Equal(t, first, pid, "request %d of a kept-alive connection went to another child", i)
		require.GreaterOrEqual(t, count, i+1)
	}
}

func TestConcurrentConnectionsGetChildrenOfTheirOwn(t *testing.T) {
	p := startPool(t, poolConfig{Min: 3, Max: 3})
	pids := make([]string, 3)
	parallel(3, func(i int) {
		resp, err := newClient().Get(p.url + "/sleep?ms=300")
		if !assert.NoError(t, err) {
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		pids[i], _, _ = strings.Cut(string(body), " ")
	})
	require.NotEmpty(t, pids[0])
	require.NotEqual(t, pids[0], pids[1])
	require.NotEqual(t, pids[1], pids[2])
	require.NotEqual(t, pids[0], pids[2])
}

func TestPanicAnswers500AndEndsTheChild(t *testing.T) {
	p := startPool(t, poolConfig{Min: 1, Max: 1}) // one child serves every request
	client := newClient()                         // one connection: the same child
	_, body := get(t, client, p.url+"/pid")
	before, _ := pidOf(t, body)

	resp, err := client.Get(p.url + "/panic")
	require.NoError(t, err)
	body500, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusInternalServerError, resp.StatusCode)
	require.Equal(t, "Internal Server Error\n", string(body500))
	require.True(t, resp.Close, "the connection of a child that panicked must close")
	require.Empty(t, resp.Header.Get("X-Pid"), "headers set before the panic are dropped")

	// The child is gone, and a new one serves.
	waitGone(t, before, 5*time.Second)
	_, body = get(t, newClient(), p.url+"/pid")
	after, count := pidOf(t, body)
	require.NotEqual(t, before, after)
	require.Equal(t, 1, count, "the new child starts with fresh state")
}

func TestPanicAfterTheResponseBeganCutsTheConnection(t *testing.T) {
	p := startPool(t, poolConfig{})
	resp, err := newClient().Get(p.url + "/panic-late")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	pid, err := strconv.Atoi(resp.Header.Get("X-Pid"))
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.Error(t, err, "a response cut short by a panic must not look complete")
	require.Equal(t, "partial", string(body))
	waitGone(t, pid, 5*time.Second)
}

// keptAlive makes one request on a connection of its own, reads the whole
// response, and returns the connection, idle now, and the response.
func keptAlive(t *testing.T, addr string) (net.Conn, *http.Response) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	fmt.Fprintf(conn, "GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return conn, resp
}

func TestGracefulStopClosesIdleConnectionsAndFinishesRequests(t *testing.T) {
	// An idle timeout far longer than the test: only the stop can close
	// the idle connection.
	p := startPool(t, poolConfig{Min: 2, Max: 2, IdleTimeout: time.Minute})

	idle, idleResp := keptAlive(t, p.addr)
	defer idle.Close()
	require.False(t, idleResp.Close)

	type result struct {
		resp *http.Response
		body string
		err  error
	}
	busy := make(chan result, 1)
	go func() {
		resp, err := newClient().Get(p.url + "/sleep?ms=3000")
		if err != nil {
			busy <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		busy <- result{resp: resp, body: string(b), err: err}
	}()
	// The stop comes while the request sleeps.
	time.Sleep(200 * time.Millisecond)
	stopped := time.Now()
	require.NoError(t, p.cmd.Process.Signal(os.Interrupt))

	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := idle.Read(make([]byte, 1))
	require.Equal(t, 0, n)
	require.ErrorIs(t, err, io.EOF, "the idle connection must be closed by the stop")
	require.Less(t, time.Since(stopped), 2*time.Second, "the idle connection waited for the busy one")

	r := <-busy
	require.NoError(t, r.err)
	require.Equal(t, http.StatusOK, r.resp.StatusCode)
	require.Contains(t, r.body, "slept")
	require.True(t, r.resp.Close, "a response during a stop says Connection: close")
	select {
	case err := <-p.wait:
		require.NoError(t, err)
		p.wait <- err // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("the master did not exit after its requests")
	}
}

func TestIdleTimeoutFreesTheChild(t *testing.T) {
	p := startPool(t, poolConfig{Min: 1, Max: 1, IdleTimeout: 300 * time.Millisecond})
	conn, _ := keptAlive(t, p.addr)
	defer conn.Close()
	start := time.Now()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := conn.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF)
	require.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
	// The only child serves the next client.
	code, _ := get(t, newClient(), p.url+"/pid")
	require.Equal(t, http.StatusOK, code)
}

func TestIdleClientLetsGoWhenOthersWait(t *testing.T) {
	// One child, and an idle timeout far longer than the test: only the
	// master's ask can free the child for the second client.
	p := startPool(t, poolConfig{Min: 1, Max: 1, IdleTimeout: time.Minute})
	idle, _ := keptAlive(t, p.addr)
	defer idle.Close()

	code, _ := get(t, newClient(), p.url+"/pid") // gives up after 10 s
	require.Equal(t, http.StatusOK, code)
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := idle.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the idle client should have been let go")
}

func TestSlowClientsAreCutAtTheHeaderTimeout(t *testing.T) {
	const children = 2
	p := startPool(t, poolConfig{Min: children, Max: children, ReadHeaderTimeout: 300 * time.Millisecond})
	// Slow clients take every child, each sending a header line now and
	// then, never the end of the headers. They are queued ahead of the
	// client that follows, so the children take them first, and no child
	// is free before ReadHeaderTimeout after start.
	start := time.Now()
	var slow []net.Conn
	for range children {
		c, err := net.Dial("tcp", p.addr)
		require.NoError(t, err)
		defer c.Close()
		fmt.Fprintf(c, "GET /pid HTTP/1.1\r\nHost: x\r\n")
		slow = append(slow, c)
	}
	stopDribbling := make(chan struct{})
	defer close(stopDribbling)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-tick.C:
				for _, c := range slow {
					fmt.Fprintf(c, "X-Slow-%d: 1\r\n", i)
				}
			case <-stopDribbling:
				return
			}
		}
	}()
	code, _ := get(t, newClient(), p.url+"/pid")
	require.Equal(t, http.StatusOK, code)
	took := time.Since(start)
	require.Less(t, took, 3*time.Second, "a slow client held a child past the header timeout")
	require.GreaterOrEqual(t, took, 300*time.Millisecond, "the slow clients did not hold the children")
	for _, c := range slow {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil { // net/http may answer 408 before it closes
			resp.Body.Close()
			require.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
		} else {
			// Cut: the reset comes from the headers it sent and nobody read.
			require.True(t, errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET), "%v", err)
		}
	}
}

func TestHijackedConnectionKeepsItsChild(t *testing.T) {
	p := startPool(t, poolConfig{Min: 1, Max: 1})
	conn, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /hijack HTTP/1.1\r\nHost: x\r\n\r\n")
	in := bufio.NewReader(conn)
	resp, err := http.ReadResponse(in, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	line, err := in.ReadString('\n')
	require.NoError(t, err)
	hijacker, err := strconv.Atoi(strings.TrimSpace(line))
	require.NoError(t, err)

	// The pool's only child is held: another client waits.
	waiting := make(chan string, 1)
	go func() {
		resp, err := newClient().Get(p.url + "/pid")
		if err != nil {
			waiting <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		waiting <- string(b)
	}()
	for _, msg := range []string{"one\n", "two\n"} {
		io.WriteString(conn, msg)
		echoed, err := in.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, msg, echoed)
	}
	select {
	case got := <-waiting:
		t.Fatalf("a request was served while the only child held a hijacked connection: %s", got)
	case <-time.After(300 * time.Millisecond):
	}
	conn.Close()
	select {
	case got := <-waiting:
		pid, _ := pidOf(t, got)
		require.Equal(t, hijacker, pid, "the child should serve again once the hijacked connection closed")
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting request was not served after the hijacked connection closed")
	}
}

func TestTLSServesHTTP1EvenToClientsThatOfferHTTP2(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	p := startPool(t, poolConfig{CertFile: certFile, KeyFile: keyFile})
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "localhost"},
			ForceAttemptHTTP2: true,
		},
	}
	resp, err := client.Get("https://" + p.addr + "/pid")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "HTTP/1.1", resp.Proto)
	require.NotNil(t, resp.TLS)
	require.Equal(t, "http/1.1", resp.TLS.NegotiatedProtocol)

	// A client that offers nothing but h2 gets no h2.
	conn, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: pool, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err == nil {
		require.NotEqual(t, "h2", conn.ConnectionState().NegotiatedProtocol)
		conn.Close()
	}
}

// selfSigned writes a certificate for localhost and 127.0.0.1, and its key,
// and returns their files and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// A client that keeps its connection busy does not keep a retired child
// (MaxLifetime here, as a restart or MaxChildMemory): the child's next
// response closes the connection, and the client's next request goes to
// another child.
func TestRetiredChildLetsAKeptAliveClientGo(t *testing.T) {
	p := startPool(t, poolConfig{Min: 2, Max: 4, MaxLifetime: time.Second})
	client := newClient()
	var first string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); {
		code, body := get(t, client, p.url+"/pid") // one connection, never idle for IdleTimeout
		require.Equal(t, http.StatusOK, code)
		pid, _, _ := strings.Cut(body, " ")
		if first == "" {
			first = pid
		} else if pid != first {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("child %s served the kept-alive client long after its MaxLifetime", first)
}

// A client that connects ahead of its first request, as browsers do, and
// sends nothing, is let go when others wait: it has sent nothing to lose.
func TestPreconnectedClientLetsGoWhenOthersWait(t *testing.T) {
	p := startPool(t, poolConfig{Min: 1, Max: 1, IdleTimeout: time.Minute, ReadHeaderTimeout: time.Minute})
	preconnected, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer preconnected.Close()

	code, _ := get(t, newClient(), p.url+"/pid") // gives up after 10 s
	require.Equal(t, http.StatusOK, code)
}

// The master asks again at each wait for the client: an ask that came
// while the client was sending its request, and so was ignored, does not
// keep the child from letting the client go once it idles.
func TestIdleClientLetsGoAfterAnAskItIgnored(t *testing.T) {
	p := startPool(t, poolConfig{Min: 1, Max: 1, IdleTimeout: time.Minute})
	slow, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer slow.Close()
	slow.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(slow, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")

	other := getInBackground(p.url + "/pid")
	// Long enough for the master to see the queue and ask (it asks once a
	// wait has lasted a tenth of a second); the ask comes mid-request.
	time.Sleep(500 * time.Millisecond)
	fmt.Fprintf(slow, "cd")
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, "abcd", string(body))

	select {
	case code := <-other:
		require.Equal(t, http.StatusOK, code)
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting client was not served: the idle one kept the child")
	}
}

// A handler that hijacks its connection may run on after it closed it: the
// child takes the next connection only once the handler has returned, so
// that a panic there ends the child before another client's request, and
// is not blamed on it.
func TestChildWaitsForAHijackingHandler(t *testing.T) {
	p := startPool(t, poolConfig{Min: 1, Max: 1})
	code, hijacker := get(t, newClient(), p.url+"/hijack-then-panic")
	require.Equal(t, http.StatusOK, code)
	code, body := get(t, newClient(), p.url+"/pid")
	require.Equal(t, http.StatusOK, code)
	pid, _, _ := strings.Cut(body, " ")
	assert.NotEqual(t, hijacker, pid, "the next client is served by the child that replaced the one whose handler panicked")
}

// A client whose first request is still coming in (its headers in pieces,
// or a TLS handshake over a slow link) is not let go when others wait: it
// has sent something, and would lose it.
func TestClientSendingItsFirstRequestIsNotLetGo(t *testing.T) {
	p := startPool(t, poolConfig{Min: 1, Max: 1, IdleTimeout: time.Minute})
	slow, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer slow.Close()
	slow.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(slow, "GET /pid HTTP/1.1\r\nHost: x\r\n")

	other := getInBackground(p.url + "/pid")
	// Long enough for the master to see the queue and ask (it asks once a
	// wait has lasted a tenth of a second).
	time.Sleep(500 * time.Millisecond)
	fmt.Fprintf(slow, "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	require.NoError(t, err, "the slow client's request was cut")
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	slow.Close()
	require.Equal(t, http.StatusOK, <-other)
}
