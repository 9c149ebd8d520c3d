package prefork

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// childEnv is the master's environment with the handover variables.
func childEnv(listeners []wire.Listener, maxProcs int) []string {
	env := []string{
		wire.EnvChild + "=" + strconv.Itoa(wire.Version),
		wire.EnvMasterPID + "=" + strconv.Itoa(os.Getpid()),
		wire.EnvListeners + "=" + wire.EncodeListeners(listeners),
	}
	// The runtime sizes itself for GOMAXPROCS as it starts: lowering it
	// later leaves the second P's threads and caches behind (a child
	// started with GOMAXPROCS=1 has 0.3 MiB less PSS). A GOMAXPROCS of the
	// user's own is passed on as it is.
	if _, set := os.LookupEnv("GOMAXPROCS"); !set && maxProcs >= 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(max(maxProcs, 1)), wire.EnvMaxProcs+"=1")
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(wire.EnvNames, name) {
			env = append(env, kv)
		}
	}
	return env
}

func (ms *master) spawn() error {
	status, childStatus, err := sys.Socketpair()
	if err != nil {
		return err
	}
	slot := slices.Index(ms.slots, false)
	if slot < 0 { // cannot happen: MaxServers bounds both
		childStatus.Close()
		status.Close()
		return errors.New("no free slot on the scoreboard")
	}
	ms.slots[slot] = true
	ms.board.Reset(slot)
	cmd := &exec.Cmd{
		Path:        ms.exe,
		Args:        os.Args,
		Env:         append(ms.env[:len(ms.env):len(ms.env)], wire.EnvBoard+"="+strconv.Itoa(slot)+","+strconv.Itoa(ms.board.Len())),
		Stdout:      os.Stdout,
		Stderr:      os.Stderr,
		ExtraFiles:  []*os.File{childStatus, ms.boardFD}, // fds 3 and 4
		SysProcAttr: sys.ChildAttr(syscall.SIGTERM),
	}
	if ms.listener != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, ms.listener) // fd 5
	}
	err = ms.spawner.start(cmd)
	childStatus.Close() // or the master would never see EOF from the child
	if err != nil {
		status.Close()
		ms.board.Release(slot)
		ms.slots[slot] = false
		return err
	}
	ms.board.SetPID(slot, cmd.Process.Pid)
	c := &child{pid: cmd.Process.Pid, slot: slot, cmd: cmd, status: status, started: time.Now()}
	ms.children[c.pid] = c
	ms.log.Debug("prefork: child started", "pid", c.pid)
	ms.watchers.Add(1)
	go ms.watch(c)
	return nil
}

// watch reads a child's status records until the child closes its end,
// then reaps it.
func (ms *master) watch(c *child) {
	defer ms.watchers.Done()
	r := wire.NewReader(c.status)
	for {
		rec, err := r.Next()
		if errors.Is(err, wire.ErrMalformed) {
			ms.events <- event{pid: c.pid, bad: err}
			continue
		}
		if err != nil {
			break
		}
		ms.events <- event{pid: c.pid, rec: rec}
	}
	err := c.cmd.Wait()
	ms.events <- event{pid: c.pid, exited: true, err: err}
}

// spawner starts every child from one goroutine locked to its OS thread
// for as long as the master runs, because Linux sends a child its
// parent-death signal when the thread that started it exits, not the
// process. The thread's timer slack, if slack > 0, is what every thread of
// every child inherits (see Manager.ChildTimerSlack); nothing else runs on
// that thread.
type spawner struct {
	cmds chan *exec.Cmd
	errs chan error
	done chan struct{}
}

func startSpawner(slack time.Duration) *spawner {
	s := &spawner{cmds: make(chan *exec.Cmd), errs: make(chan error), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if slack > 0 {
			// It fails only for a value out of range, which config refuses.
			sys.SetTimerSlack(slack)
		}
		for cmd := range s.cmds {
			s.errs <- cmd.Start()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	s.cmds <- cmd
	return <-s.errs
}

func (s *spawner) stop() {
	close(s.cmds)
	<-s.done
}
