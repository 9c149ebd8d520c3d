package prefork

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/prefork-go/prefork/internal/wire"
)

// childEnv is the master's environment with the handover variables, and
// without what the service manager told the master alone.
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
		if !slices.Contains(wire.EnvNames, name) && !slices.Contains(serviceManagerEnv, name) {
			env = append(env, kv)
		}
	}
	return env
}

// spawn starts a child, serving or parked once it is ready. The start
// itself runs on one of the spawner's threads, which reports it as an
// event; until then the child counts as starting.
func (ms *master) spawn(startPhase phase) error {
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
		SysProcAttr: sys.ChildAttr(syscall.SIGTERM, ms.cfg.credential),
	}
	for _, l := range ms.listeners {
		cmd.ExtraFiles = append(cmd.ExtraFiles, l.file) // fds 5 and on
	}
	c := &child{slot: slot, cmd: cmd, status: status, started: time.Now(), startPhase: startPhase}
	c.expires = ms.cfg.recycle.expiry(c.started)
	if startPhase == parked {
		// It starts out of the listeners' queues, so that the kernel
		// never wakes it for a connection before it has read that it is
		// parked.
		cmd.Env = append(cmd.Env, wire.EnvParked+"=1")
		ms.send(c, wire.Park)
	}
	ms.children = append(ms.children, c)
	ms.spawner.start(func() {
		err := cmd.Start()
		childStatus.Close() // or the master would never see EOF from the child
		ms.events <- event{c: c, started: true, err: err}
		if err == nil {
			ms.watchers.Add(1)
			go ms.watch(c)
		}
	})
	return nil
}

// started takes the spawner's report on c.
func (ms *master) started(c *child, err error) {
	if err != nil {
		ms.children = slices.DeleteFunc(ms.children, func(x *child) bool { return x == c })
		c.status.Close()
		ms.board.Release(c.slot)
		ms.slots[c.slot] = false
		ms.log.Error("prefork: cannot start a child", "err", err)
		ms.startFailed(c.started, err)
		return
	}
	c.proc = c.cmd.Process
	c.pid = c.proc.Pid
	ms.board.SetPID(c.slot, c.pid)
	ms.log.Debug("prefork: child started", "pid", c.pid)
	ms.counted(func(p *Stats) { p.Started++ })
	if hook := ms.cfg.hooks.ChildStarted; hook != nil {
		if perr := guard("ChildStarted", func() error { hook(c.pid); return nil }); perr != nil {
			logPanic(ms.log, perr)
		}
	}
	if c.phase == killed { // killed before it had started
		c.proc.Kill()
	}
}

// watch reads a child's status records until the child closes its end,
// then reaps it.
func (ms *master) watch(c *child) {
	defer ms.watchers.Done()
	r := wire.NewReader(c.status)
	for {
		rec, err := r.Next()
		if errors.Is(err, wire.ErrMalformed) {
			ms.events <- event{c: c, bad: err}
			continue
		}
		if err != nil {
			break
		}
		ms.events <- event{c: c, rec: rec}
	}
	err := c.cmd.Wait()
	ms.events <- event{c: c, exited: true, err: err}
}

// spawnThreads is how many children can start at once. Each start blocks
// its thread until the new process has exec'd; a burst of connections
// wants many children at once.
const spawnThreads = 4

// spawner starts children from goroutines locked to their OS threads for
// as long as the master runs, because Linux sends a child its
// parent-death signal when the thread that started it exits, not the
// process. The threads' timer slack, if slack > 0, is what every thread of
// every child inherits (see Manager.ChildTimerSlack); nothing else runs on
// them.
type spawner struct {
	jobs chan func()
	done sync.WaitGroup
}

// startSpawner starts the threads; queue bounds the starts that can wait
// for one, so that the loop never blocks on them.
func startSpawner(queue int, slack time.Duration) *spawner {
	s := &spawner{jobs: make(chan func(), queue)}
	for range spawnThreads {
		s.done.Go(func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			if slack > 0 {
				// The main thread does not end with a goroutine locked to
				// it: it keeps its own slack.
				if own, err := sys.TimerSlack(); err == nil {
					defer sys.SetTimerSlack(own)
				}
				// It fails only for a value out of range, which config refuses.
				sys.SetTimerSlack(slack)
			}
			for job := range s.jobs {
				job()
			}
		})
	}
	return s
}

func (s *spawner) start(job func()) { s.jobs <- job }

func (s *spawner) stop() {
	close(s.jobs)
	s.done.Wait()
}
