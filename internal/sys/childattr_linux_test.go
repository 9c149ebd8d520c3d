package sys

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A child started as another user still gets its parent-death signal when
// the thread that started it exits: the change of user, which clears the
// signal, comes before it is set.
func TestChildAttrCredentialKeepsTheParentDeathSignal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root can start a process as another user (run the tests as root to run this one)")
	}
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)
	started := make(chan *exec.Cmd, 1)
	startErr := make(chan error, 1)
	exitThread := make(chan struct{})
	// The main thread does not exit with a goroutine locked to it: keep it
	// busy until the test ends, and start the child from another.
	holdMain := make(chan struct{})
	defer close(holdMain)
	var start func()
	start = func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine, as a dead master's would
		if syscall.Gettid() == os.Getpid() {
			go start()
			<-holdMain
			return
		}
		cmd := exec.Command(sleep, "30")
		cmd.SysProcAttr = ChildAttr(syscall.SIGTERM, &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}})
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		started <- cmd
		<-exitThread
	}
	go start()
	var cmd *exec.Cmd
	select {
	case cmd = <-started:
	case err := <-startErr:
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	require.NoError(t, err)
	ids := map[string]string{}
	for line := range strings.Lines(string(status)) {
		name, values, _ := strings.Cut(line, ":")
		ids[name] = strings.Join(strings.Fields(values), " ")
	}
	assert.Equal(t, "65534 65534 65534 65534", ids["Uid"])
	assert.Equal(t, "65534 65534 65534 65534", ids["Gid"])
	assert.Empty(t, ids["Groups"])

	close(exitThread)
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("the child outlived the thread that started it")
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	assert.True(t, ws.Signaled() && ws.Signal() == syscall.SIGTERM, "the child ended by %v", cmd.ProcessState)
}
