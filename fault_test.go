package prefork_test

import (
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPanicInChildIsRecoveredAndChildReplaced(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	victim := c.ask("pid")
	c.send("panic")
	_, err := c.recv()
	assert.Error(t, err, "the connection is closed")

	p.waitFor("the panicking child's Shutdown", func() bool {
		for _, ev := range p.readEvents() {
			if ev.Hook == "Shutdown" && ev.Detail == "PanicError in ProcessRequest" {
				return true
			}
		}
		return false
	})
	p.waitFor("the master's log of the child's death", func() bool {
		log := p.logText()
		return strings.Contains(log, "child died") && strings.Contains(log, "panic in ProcessRequest: the test asked for it")
	})
	assert.Contains(t, p.logText(), "goroutine", "the stack is logged")
	p.waitFor("a replacement", func() bool {
		kids := p.children()
		return len(kids) >= 2 && !slices.Contains(kids, atoi(t, victim))
	})
	after := p.dial()
	assert.Equal(t, "after", after.ask("after"))
	after.conn.Close()
	p.signal(syscall.SIGTERM)
	require.NoError(t, p.wait())
}

func TestMalformedStatusRecordGetsChildKilled(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 2, Max: 3, MinSpare: 1, MaxSpare: 2})
	c := p.dial()
	victim := atoi(t, c.ask("pid"))
	c.send("corrupt")
	p.waitFor("the corrupting child to be killed", func() bool { return !slices.Contains(p.children(), victim) })
	assert.Contains(t, p.logText(), "malformed status record")
	assert.Equal(t, "still serving", p.dial().ask("still serving"))
}
