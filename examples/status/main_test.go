package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The test binary runs the example itself: TestMain calls main when
// envMain is set, in the master and in the children it starts.
const envMain = "STATUS_EXAMPLE_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envMain) != "" {
		os.Args = append([]string{os.Args[0]}, strings.Fields(os.Getenv(envMain))...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestStatusPageShowsTheBusyChild(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envMain+"=-addr 127.0.0.1:0 -status-addr 127.0.0.1:0 -min-servers 2 -max-servers 3")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})

	// The page's address is in the master's log.
	found := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`msg="status page" addr=(\S+)`)
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	var page string
	select {
	case page = <-found:
	case <-time.After(10 * time.Second):
		t.Fatal("the status page did not start")
	}
	// get returns the page at path, or "" (conditions of Eventually run on
	// a goroutine of their own, where a test must not fail).
	get := func(path string) string {
		resp, err := http.Get("http://" + page + path)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}

	var s prefork.Stats
	require.Eventually(t, func() bool {
		return json.Unmarshal([]byte(get("/?format=json")), &s) == nil && len(s.Children) >= 2 && s.Addr != ""
	}, 10*time.Second, 10*time.Millisecond, "the pool is not ready")

	// A client in the middle of its conversation shows on the page.
	conn, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(conn, "hello")
	echo, err := bufio.NewReader(conn).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "hello\n", echo)
	if !assert.Eventually(t, func() bool {
		return strings.Contains(get("/?full"), conn.LocalAddr().String())
	}, 10*time.Second, 10*time.Millisecond, "the busy child's client is not on the page") {
		t.Fatalf("the page:\n%s", get("/?full"))
	}
	require.Contains(t, get("/metrics"), `prefork_children{state="busy"} 1`)
}
