package prefork_test

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

var soakTime = flag.Duration("soak", 3*time.Second, "how long TestSoak runs")

// TestSoak runs clients on loopback while children are killed at random
// and others retire after MaxRequests. Each kill may cost the one request
// that child had in hand, and nothing more: a request that failed in a
// child that was not killed is an error, and so are more failures than
// kills. Run longer with -soak=1m.
func TestSoak(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 4, Max: 8, MinSpare: 2, MaxSpare: 4, MaxRequests: 25, Quiet: true})
	deadline := time.Now().Add(*soakTime)
	const maxPerClient = 100_000 // a bound besides time

	var mu sync.Mutex
	killed := map[int]bool{}
	costs := map[int]int{} // failed requests of each killed child
	var requests, failures, unexplained, unknown int
	fail := func(pid int, why string) {
		mu.Lock()
		defer mu.Unlock()
		failures++
		switch {
		case pid == 0: // before the child said who it is
			unknown++
		case !killed[pid]:
			unexplained++
			t.Logf("request served by child %d, which was not killed, failed: %s", pid, why)
		default:
			costs[pid]++
		}
	}

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i := 0; i < maxPerClient && time.Now().Before(deadline); i++ {
				pid, err := soakRequest(p.addr, i)
				mu.Lock()
				requests++
				mu.Unlock()
				if err != nil {
					fail(pid, err.Error())
				}
			}
		})
	}
	wg.Go(func() { // the killer
		for time.Now().Before(deadline) {
			time.Sleep(time.Duration(50+rand.IntN(100)) * time.Millisecond)
			kids := p.children()
			if len(kids) == 0 {
				continue
			}
			victim := kids[rand.IntN(len(kids))]
			mu.Lock()
			killed[victim] = true
			mu.Unlock()
			syscall.Kill(victim, syscall.SIGKILL)
		}
	})
	wg.Wait()

	t.Logf("%v: %d requests, %d children killed, %d failed requests", *soakTime, requests, len(killed), failures)
	assert.Zero(t, unexplained, "failures in children that were not killed")
	for pid, n := range costs {
		assert.LessOrEqual(t, n, 1, "child %d was killed once and cost %d requests", pid, n)
	}
	// A failure before the child said its pid is one of a killed child's
	// too, of one that did not cost another.
	assert.LessOrEqual(t, unknown, len(killed)-len(costs), "failures that no kill explains")
	assert.Greater(t, requests, 100)
	select {
	case <-p.done:
		t.Fatalf("master exited: %v", p.err)
	default:
	}
	assert.Equal(t, "alive", p.dial().ask("alive"))
	// A child killed just before the end may still be exiting: SIGKILL is
	// not instant for a process of several threads.
	p.waitFor("the killed children to be gone", func() bool {
		survivors := p.children()
		for pid := range killed {
			if slices.Contains(survivors, pid) {
				return false
			}
		}
		return true
	})
}

// soakRequest makes one connection: it asks which child serves it, then
// for an echo. It returns the child's pid once known.
func soakRequest(addr string, i int) (pid int, err error) {
	conn, err := net.DialTimeout("tcp", addr, waitLimit)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLimit))
	in := bufio.NewReader(conn)
	fmt.Fprintln(conn, "pid")
	line, err := in.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("pid: %w", err)
	}
	if pid, err = strconv.Atoi(line[:len(line)-1]); err != nil {
		return 0, err
	}
	msg := "soak " + strconv.Itoa(i)
	fmt.Fprintln(conn, msg)
	if line, err = in.ReadString('\n'); err != nil || line != msg+"\n" {
		return pid, fmt.Errorf("echo: %q, %v", line, err)
	}
	return pid, nil
}
