package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/internal/tooltest"
	"github.com/prefork-go/prefork/preforktest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The test binary runs main itself when ECHO_TEST_MAIN is set, so that the
// test drives the example as a user would: flags, a real port, SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("ECHO_TEST_MAIN") != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startEcho runs the example with args and returns the address it logs.
func startEcho(t *testing.T, args ...string) (addr string, stop func()) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "ECHO_TEST_MAIN=1")
	logPath, stop := runEcho(t, cmd)
	// In reuse-port mode nothing listens until the children have bound:
	// wait until the pool says it is ready.
	addrRE := regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)(?s:.*)pool ready`)
	for deadline := time.Now().Add(30 * time.Second); addr == ""; time.Sleep(10 * time.Millisecond) {
		out, _ := os.ReadFile(logPath)
		if m := addrRE.FindSubmatch(out); m != nil {
			addr = string(m[1])
		}
		require.True(t, time.Now().Before(deadline), "the server did not log its address and readiness")
	}
	return addr, stop
}

// runEcho starts cmd, which runs the example, in a process group of its
// own, and returns the file it logs to and a function that stops it with
// SIGTERM and checks that it and its children exited.
func runEcho(t *testing.T, cmd *exec.Cmd) (logPath string, stop func()) {
	t.Helper()
	logPath = filepath.Join(t.TempDir(), "log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			out, _ := os.ReadFile(logPath)
			t.Logf("log:\n%s", out)
		}
	})
	return logPath, func() {
		t.Helper()
		require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
		select {
		case err := <-done:
			require.NoError(t, err, "exit status after SIGTERM")
		case <-time.After(30 * time.Second):
			t.Fatal("the server did not stop on SIGTERM")
		}
		err := syscall.Kill(-cmd.Process.Pid, 0)
		assert.True(t, errors.Is(err, syscall.ESRCH), "processes of the server's group are left: %v", err)
	}
}

func TestEchoTCP(t *testing.T) {
	t.Parallel()
	addr, stop := startEcho(t, "-min-servers", "2", "-max-servers", "4",
		"-min-spare-servers", "1", "-max-spare-servers", "2", "-max-requests", "2")
	// More connections than children and than MaxRequests allows one child.
	for i := range 6 {
		conn, err := net.DialTimeout("tcp", addr, 30*time.Second)
		require.NoError(t, err)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		in := bufio.NewReader(conn)
		for _, line := range []string{fmt.Sprintf("hello %d", i), "second line"} {
			fmt.Fprintln(conn, line)
			got, err := in.ReadString('\n')
			require.NoError(t, err)
			assert.Equal(t, line+"\n", got)
		}
		conn.Close()
	}
	stop()
}

func TestEchoUDPReusePort(t *testing.T) {
	t.Parallel()
	addr, stop := startEcho(t, "-proto", "udp", "-reuse-port", "-min-servers", "2", "-max-servers", "3")
	conn, err := net.Dial("udp", addr)
	require.NoError(t, err)
	defer conn.Close()
	buf := make([]byte, 100)
	for i := range 5 {
		msg := fmt.Sprintf("datagram %d", i)
		_, err := conn.Write([]byte(msg))
		require.NoError(t, err)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		n, err := conn.Read(buf)
		require.NoError(t, err)
		assert.Equal(t, msg, string(buf[:n]))
	}
	stop()
}

// With -also, one pool serves a TCP, a UDP and a Unix socket.
func TestEchoSeveralSockets(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "echo.sock")
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0") // a free port, a moment ago
	require.NoError(t, err)
	udpAddr := udp.LocalAddr().String()
	udp.Close()
	addr, stop := startEcho(t, "-also", "udp:"+udpAddr, "-also", "unix:"+path, "-min-servers", "1", "-max-servers", "2")
	for _, target := range [][2]string{{"tcp", addr}, {"unix", path}} {
		conn, err := net.DialTimeout(target[0], target[1], 30*time.Second)
		require.NoError(t, err)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintln(conn, "hello", target[0])
		got, err := bufio.NewReader(conn).ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "hello "+target[0]+"\n", got)
		conn.Close()
	}
	conn, err := net.Dial("udp", udpAddr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("datagram"))
	require.NoError(t, err)
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 100)
	n, err := conn.Read(buf)
	require.NoError(t, err)
	assert.Equal(t, "datagram", string(buf[:n]))
	stop()
}

// Started by systemd-socket-activate with a Unix socket, the example serves
// it with no flag: -addr's default does not get in the way.
func TestEchoSocketActivated(t *testing.T) {
	t.Parallel()
	program := tooltest.Program(t, "systemd-socket-activate", "systemd")
	path := filepath.Join(t.TempDir(), "echo.sock")
	cmd := exec.Command(program, "-l", path, "-E", "ECHO_TEST_MAIN=1", "-E", "GORACE="+os.Getenv("GORACE"),
		os.Args[0], "-min-servers", "1", "-max-servers", "2", "-min-spare-servers", "1", "-max-spare-servers", "1")
	_, stop := runEcho(t, cmd)
	var conn net.Conn
	for deadline := time.Now().Add(30 * time.Second); conn == nil; time.Sleep(10 * time.Millisecond) {
		conn, _ = net.Dial("unix", path) // once systemd-socket-activate listens
		require.True(t, conn != nil || time.Now().Before(deadline), "nothing listens on %s", path)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintln(conn, "hello")
	got, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "hello\n", got)
	conn.Close()
	stop()
	_, err = os.Lstat(path)
	assert.NoError(t, err, "the socket's file is systemd's: it stays")
}

// The echo Child itself, in the test's process: no pool, no fork.
func TestEchoChildTCP(t *testing.T) {
	t.Parallel()
	s := preforktest.NewServer(t, &prefork.Manager{NewChild: func() prefork.Child { return echo{} }})
	conn := s.Dial(t)
	in := bufio.NewReader(conn)
	for _, line := range []string{"hello", "second line"} {
		fmt.Fprintln(conn, line)
		got, err := in.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, line+"\n", got)
	}
	conn.Close() // the end of the request: echo serves a connection until the client closes it
	require.NoError(t, s.Close())
}

func TestEchoChildUDP(t *testing.T) {
	t.Parallel()
	s := preforktest.NewServer(t, &prefork.Manager{Network: "udp", NewChild: func() prefork.Child { return echo{} }})
	for i := range 3 {
		msg := fmt.Sprintf("datagram %d", i)
		assert.Equal(t, msg, string(s.Exchange(t, []byte(msg))))
	}
	require.NoError(t, s.Close())
}
