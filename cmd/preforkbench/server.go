//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// readyTimeout bounds the wait for a server to come up.
const readyTimeout = 30 * time.Second

var (
	// The master logs one of these once it has its address (the second in
	// reuse-port mode, where the children bind).
	listeningRE  = regexp.MustCompile(`msg="prefork: (listening|children listen with SO_REUSEPORT)"`)
	poolReadyRE  = regexp.MustCompile(`msg="prefork: pool ready"`)
	childReadyRE = regexp.MustCompile(`msg="prefork: child ready" pid=(\d+)`)
	ceilingRE    = regexp.MustCompile(`ceiling: listening tcp=(\S+) udp=(\S+) io=(\S+)`)
	backendRE    = regexp.MustCompile(`backend: listening tcp=(\S+)`)
	plainHTTPRE  = regexp.MustCompile(`httpserver: net/http listening addr=(\S+)`)
	logTimeRE    = regexp.MustCompile(`^time=(\S+)`)
)

// server is a process this program started, in a process group of its own,
// with its standard output and error in a log file.
type server struct {
	name    string
	pid     int // also the process group's id
	addr    string
	udpAddr string // the ceiling's UDP address
	ioAddr  string // the ceiling's address for the io mode
	logPath string
	done    chan struct{} // closed once the process is reaped
	once    sync.Once
}

// startProcess starts path with args, in a new process group so that stop
// reaches the prefork children too, and with a parent-death signal so that
// nothing outlives this program even if it is killed.
func startProcess(name, path string, args, env []string, logPath string) (*server, error) {
	// O_APPEND: the master and its children share this file, and each
	// line must land whole at the end.
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the process has its own copy
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, pid: cmd.Process.Pid, logPath: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	return s, nil
}

// stop ends the server's whole process group and waits for its master. A
// prefork server gets SIGTERM first, so that its master reaps its children
// (they would otherwise be left to PID 1, which may not reap them); then
// SIGKILL ends whatever is left. It can be called more than once.
func (s *server) stop() {
	s.once.Do(func() {
		syscall.Kill(-s.pid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
		}
		syscall.Kill(-s.pid, syscall.SIGKILL)
		<-s.done
	})
}

// exited tells whether the server's master has exited.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// startPrefork starts examples/echo on a free loopback port and waits until
// its pool is ready.
func startPrefork(ctx context.Context, cfg config, echoBin, dir, name, network string, p pool) (*server, error) {
	addr, err := freePort(network)
	if err != nil {
		return nil, err
	}
	args := append(serverArgs(cfg, addr, p), "-proto", network)
	return launchPrefork(ctx, name, echoBin, dir, addr, args)
}

// startIOPrefork starts the io mode's prefork server, with the io pool, on
// a free loopback port, and waits until its pool is ready.
func startIOPrefork(ctx context.Context, cfg config, ioBin, dir, backendAddr string) (*server, error) {
	addr, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	args := append(serverArgs(cfg, addr, cfg.IOPool), "-backend", backendAddr, "-timer-slack", cfg.IOTimerSlack.String())
	return launchPrefork(ctx, "prefork-io", ioBin, dir, addr, args)
}

// startHTTPPrefork starts internal/httpserver's prefork pool p with the
// given handler ("short" or "io", which asks the backend at backendAddr) on
// a free loopback port, and waits until its pool is ready. The io handler's
// children get the io mode's timer slack, as the io mode's do.
func startHTTPPrefork(ctx context.Context, cfg config, httpBin, dir, name string, p pool, handler, backendAddr string) (*server, error) {
	addr, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	args := append(serverArgs(cfg, addr, p), "-handler", handler)
	if handler == "io" {
		args = append(args, "-backend", backendAddr, "-timer-slack", cfg.IOTimerSlack.String())
	}
	return launchPrefork(ctx, name, httpBin, dir, addr, args)
}

// startPlainHTTP starts internal/httpserver as a plain net/http server with
// the given handler, on a loopback port that it picks, and waits for the
// address it logs.
func startPlainHTTP(ctx context.Context, httpBin, dir, name, handler, backendAddr string) (*server, error) {
	args := []string{"-plain", "-addr", "127.0.0.1:0", "-handler", handler}
	if handler == "io" {
		args = append(args, "-backend", backendAddr)
	}
	s, m, err := startLogged(ctx, name, httpBin, args, nil, dir, plainHTTPRE)
	if err != nil {
		return nil, err
	}
	s.addr = m[1]
	return s, nil
}

// serverArgs are the flags that examples/echo, the io server and the HTTP
// server's pool share. -v makes them log each child's readiness, which the
// extras and the sweep wait for.
func serverArgs(cfg config, addr string, p pool) []string {
	args := []string{
		"-addr", addr, "-v",
		"-min-servers", strconv.Itoa(p.Min), "-max-servers", strconv.Itoa(p.Max),
		"-min-spare-servers", strconv.Itoa(p.MinSpare), "-max-spare-servers", strconv.Itoa(p.MaxSpare),
		"-max-requests", strconv.Itoa(cfg.ServerMaxRequests),
	}
	if cfg.ReusePort {
		args = append(args, "-reuse-port")
	}
	return args
}

// launchPrefork starts a prefork server that listens on addr and waits
// until its pool is ready.
func launchPrefork(ctx context.Context, name, bin, dir, addr string, args []string) (*server, error) {
	s, err := startProcess(name, bin, args, nil, filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	s.addr = addr
	if _, _, err := s.waitLog(ctx, poolReadyRE, 0, readyTimeout); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// startCeiling runs this binary again as the ceiling server and waits for
// the addresses it logs. With a backendAddr, the ceiling also serves the io
// mode.
func startCeiling(ctx context.Context, dir, backendAddr string) (*server, error) {
	env := []string{ceilingEnv + "=1"}
	if backendAddr != "" {
		env = append(env, ceilingBackendEnv+"="+backendAddr)
	}
	s, m, err := startSelf(ctx, "ceiling", env, dir, ceilingRE)
	if err != nil {
		return nil, err
	}
	s.addr, s.udpAddr, s.ioAddr = m[1], m[2], m[3]
	return s, nil
}

// startBackend runs this binary again as the io mode's backend, the
// database stand-in, and waits for the address it logs.
func startBackend(ctx context.Context, dir string) (*server, error) {
	s, m, err := startSelf(ctx, "backend", []string{backendEnv + "=1"}, dir, backendRE)
	if err != nil {
		return nil, err
	}
	s.addr = m[1]
	return s, nil
}

// startSelf runs this binary again with env added to its environment, and
// waits for a line of its log that matches re, whose submatches it returns.
func startSelf(ctx context.Context, name string, env []string, dir string, re *regexp.Regexp) (*server, []string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, err
	}
	return startLogged(ctx, name, exe, nil, env, dir, re)
}

// startLogged runs path with args, and env added to its environment, and
// waits for a line of its log that matches re, whose submatches it returns.
func startLogged(ctx context.Context, name, path string, args, env []string, dir string, re *regexp.Regexp) (*server, []string, error) {
	s, err := startProcess(name, path, args, env, filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, nil, err
	}
	line, _, err := s.waitLog(ctx, re, 0, readyTimeout)
	if err != nil {
		s.stop()
		return nil, nil, err
	}
	return s, re.FindStringSubmatch(line), nil
}

// freePort returns a loopback address with a port that was free a moment
// ago: the kernel picks it, and the socket is closed for the server to bind.
func freePort(network string) (string, error) {
	var addr net.Addr
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr = c.LocalAddr()
		c.Close()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		addr = l.Addr()
		l.Close()
	}
	return addr.String(), nil
}

// waitLog polls the server's log, from offset on, until a complete line
// matches re, and returns the line and the offset just past it. It fails if
// the server exits or timeout passes first.
func (s *server) waitLog(ctx context.Context, re *regexp.Regexp, offset int64, timeout time.Duration) (string, int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		// Checked before reading, so that a line written just before the
		// exit is still found.
		exited := s.exited()
		data, err := readFrom(s.logPath, offset)
		if err != nil {
			return "", offset, err
		}
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break // a line still being written, or none
			}
			line := data[:i]
			data = data[i+1:]
			offset += int64(i + 1)
			if re.Match(line) {
				return string(line), offset, nil
			}
		}
		switch {
		case exited:
			return "", offset, fmt.Errorf("%s exited while waiting for %q in its log:\n%s", s.name, re, s.logTail())
		case time.Now().After(deadline):
			return "", offset, fmt.Errorf("%s: no %q in its log after %v:\n%s", s.name, re, timeout, s.logTail())
		}
		select {
		case <-ctx.Done():
			return "", offset, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// pollPause is the pause between two reads of a log in pollLog. time.Sleep
// would not do: when the program has nothing else to run, the Go runtime
// waits for its next timer in whole milliseconds, and a Sleep of 0.2 ms
// lasts about 1.1 ms on Linux. nanosleep(2) blocks the thread instead, and
// returns after about 0.28 ms.
const pollPause = 200 * time.Microsecond

// pollLog is waitLog with sub-millisecond resolution, for timings: it reads
// the log every pollPause from offset on, until a complete line matches re,
// and returns the time at which it read that line. It fails if the server
// exits or timeout passes first.
func (s *server) pollLog(ctx context.Context, re *regexp.Regexp, offset int64, timeout time.Duration) (time.Time, error) {
	f, err := os.Open(s.logPath)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return time.Time{}, err
	}
	deadline := time.Now().Add(timeout)
	pause := syscall.NsecToTimespec(int64(pollPause))
	buf := make([]byte, 64<<10)
	var partial []byte // read but not yet split into lines
	for {
		exited := s.exited() // before the read, as in waitLog
		// A read at the end of the file returns io.EOF; a later one
		// returns what was appended meanwhile.
		n, err := f.Read(buf)
		seen := time.Now()
		if err != nil && err != io.EOF {
			return time.Time{}, err
		}
		partial = append(partial, buf[:n]...)
		for {
			i := bytes.IndexByte(partial, '\n')
			if i < 0 {
				break
			}
			line := partial[:i]
			partial = partial[i+1:]
			if re.Match(line) {
				return seen, nil
			}
		}
		switch {
		case exited:
			return time.Time{}, fmt.Errorf("%s exited while waiting for %q in its log:\n%s", s.name, re, s.logTail())
		case seen.After(deadline):
			return time.Time{}, fmt.Errorf("%s: no %q in its log after %v:\n%s", s.name, re, timeout, s.logTail())
		case ctx.Err() != nil:
			return time.Time{}, ctx.Err()
		}
		syscall.Nanosleep(&pause, nil)
	}
}

// logSize is the length of the log so far: where the next line will start.
func (s *server) logSize() (int64, error) {
	fi, err := os.Stat(s.logPath)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// logTail is the end of the log, for error messages.
func (s *server) logTail() string {
	data, _ := os.ReadFile(s.logPath)
	if len(data) > 2000 {
		data = data[len(data)-2000:]
	}
	return string(data)
}

func readFrom(path string, offset int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

// logTime is the time= of a log line from slog's text handler (millisecond
// resolution).
func logTime(line string) (time.Time, error) {
	m := logTimeRE.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}, errors.New("no time= in log line: " + line)
	}
	return time.Parse(time.RFC3339Nano, m[1])
}
