package preforkhttp_test

// The test binary is its own master and children, as in the root
// package's tests: a test starts the binary again with envHelper set,
// TestMain runs helperMain instead of the tests, and the children that Run
// starts reach the same Run and serve. The master prints its address and
// its readiness on standard output.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/prefork-go/prefork/preforkhttp"
	"github.com/stretchr/testify/require"
)

const (
	envHelper = "PFHTTP_HELPER"
	envConfig = "PFHTTP_CONFIG"
)

func TestMain(m *testing.M) {
	if os.Getenv(envHelper) != "" {
		os.Exit(helperMain())
	}
	// Under -race the helpers are instrumented too, and such a program
	// sleeps a second as it exits, for late races to be reported: the
	// tests wait for hundreds of exits. A tenth of a second still catches
	// what races at exit.
	if gorace := os.Getenv("GORACE"); !strings.Contains(gorace, "atexit_sleep_ms") {
		os.Setenv("GORACE", strings.TrimSpace(gorace+" atexit_sleep_ms=100"))
	}
	os.Exit(m.Run())
}

// poolConfig is the pool and the server a test asks the helper to run.
type poolConfig struct {
	Min, Max          int
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	ShutdownTimeout   time.Duration
	MaxLifetime       time.Duration
	CertFile, KeyFile string
}

func helperMain() int {
	var cfg poolConfig
	if err := json.Unmarshal([]byte(os.Getenv(envConfig)), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "helper: bad config:", err)
		return 3
	}
	if cfg.Min == 0 {
		cfg.Min, cfg.Max = 2, 4
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := &prefork.Manager{
		Addr:            "127.0.0.1:0",
		MinServers:      cfg.Min,
		MaxServers:      cfg.Max,
		MinSpareServers: 1,
		MaxSpareServers: cfg.Max,
		ShutdownTimeout: cfg.ShutdownTimeout,
		MaxLifetime:     cfg.MaxLifetime,
		Logger:          logger,
		NewChild: func() prefork.Child {
			return &preforkhttp.Server{
				Handler:           testHandler(),
				ReadHeaderTimeout: cfg.ReadHeaderTimeout,
				IdleTimeout:       cfg.IdleTimeout,
				CertFile:          cfg.CertFile,
				KeyFile:           cfg.KeyFile,
				Logger:            logger,
			}
		},
		Hooks: prefork.ManagerHooks{
			PostBind: func(_ context.Context, addr net.Addr) error {
				fmt.Println("ADDR", addr)
				return nil
			},
			PostInitChildren: func(context.Context) error {
				fmt.Println("READY")
				return nil
			},
		},
	}
	if err := m.Run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "helper: Run:", err)
		return 1
	}
	return 0
}

// served counts the requests of this child process: state that a plain
// net/http server would share between concurrent requests.
var served int

func testHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/pid", func(w http.ResponseWriter, r *http.Request) {
		served++
		fmt.Fprintf(w, "%d %d", os.Getpid(), served)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Fprintf(w, "%d slept", os.Getpid())
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		// The whole body before the answer: net/http may close a body
		// whose response has begun (see http.ResponseController's
		// EnableFullDuplex).
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(body)
	})
	mux.HandleFunc("/panic", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", strconv.Itoa(os.Getpid()))
		panic("handler broke")
	})
	mux.HandleFunc("/panic-late", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Pid", strconv.Itoa(os.Getpid()))
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		panic("handler broke after the response began")
	})
	mux.HandleFunc("/hijack-then-panic", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		pid := strconv.Itoa(os.Getpid())
		fmt.Fprintf(rw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(pid), pid)
		rw.Flush()
		conn.Close()
		time.Sleep(300 * time.Millisecond) // cleanup, after the connection is over
		panic("the hijacking handler broke after its connection closed")
	})
	mux.HandleFunc("/hijack", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: lines\r\nConnection: Upgrade\r\n\r\n%d\n", os.Getpid())
		rw.Flush()
		for { // echo lines until the client closes
			line, err := rw.ReadString('\n')
			if err != nil {
				return
			}
			rw.WriteString(line)
			rw.Flush()
		}
	})
	return mux
}

// pool is a running helper master.
type pool struct {
	cmd  *exec.Cmd
	addr string
	url  string
	wait chan error // Wait's result, once the master exits
}

// startPool starts a master with cfg and waits until MinServers children
// are ready. The master is stopped, and its process group killed, when the
// test ends.
func startPool(t *testing.T, cfg poolConfig) *pool {
	t.Helper()
	js, err := json.Marshal(cfg)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envHelper+"=1", envConfig+"="+string(js))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	p := &pool{cmd: cmd, wait: make(chan error, 1)}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		p.wait <- cmd.Wait() // after the last read, as exec requires
	}()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			require.True(t, ok, "the master exited before its pool was ready")
			if a, found := strings.CutPrefix(line, "ADDR "); found {
				p.addr = a
				p.url = "http://" + a
			}
			if line == "READY" {
				require.NotEmpty(t, p.addr)
				go func() {
					for range lines { // children print nothing; drain anyway
					}
				}()
				return p
			}
		case <-deadline:
			t.Fatal("the pool was not ready within 10s")
		}
	}
}

// stop stops the master with SIGTERM, and kills its process group if it
// has not exited within 10 s.
func (p *pool) stop(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.wait:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		t.Error("the master did not stop within 10s of SIGTERM")
		<-p.wait
	}
}

// get fetches path with client and returns the response's status and body.
func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

// alive reports whether process pid exists (a zombie counts as gone once
// the master has reaped it).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

// waitGone waits up to d for process pid to be gone.
func waitGone(t *testing.T, pid int, d time.Duration) {
	t.Helper()
	require.Eventually(t, func() bool { return !alive(pid) }, d, 5*time.Millisecond, "process %d still exists", pid)
}

// newClient is an HTTP client of its own, with its own connections, that
// gives up after 10 s.
// getInBackground asks for url from a goroutine and sends its status code,
// or 0 if the request failed.
func getInBackground(url string) <-chan int {
	code := make(chan int, 1)
	go func() {
		resp, err := newClient().Get(url)
		if err != nil {
			code <- 0
			return
		}
		resp.Body.Close()
		code <- resp.StatusCode
	}()
	return code
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
}

// parallel runs f(i) for i in [0, n) at once and waits for all.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}
