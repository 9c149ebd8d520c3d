package prefork_test

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logRecords returns the JSON records of the pool's log that have the
// attribute key.
func (p *pool) logRecords(key string) []map[string]any {
	var recs []map[string]any
	for _, line := range strings.Split(p.logText(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec[key] != nil {
			recs = append(recs, rec)
		}
	}
	return recs
}

func TestSlowRequestLogsTheChildsStacks(t *testing.T) {
	t.Parallel()
	p := startReady(t, helperConfig{Min: 1, Max: 2, MinSpare: 1, MaxSpare: 2, SlowRequest: 100 * time.Millisecond, Quiet: true})
	c := p.dial()
	pid := c.ask("pid")
	c.send("sleep 600ms")
	var recs []map[string]any
	require.Eventually(t, func() bool { recs = p.logRecords("stacks"); return len(recs) > 0 }, waitLimit, 10*time.Millisecond, "no stacks logged")
	rec := recs[0]
	assert.Equal(t, pid, strconv.Itoa(int(rec["pid"].(float64))))
	assert.Equal(t, c.conn.LocalAddr().String(), rec["remote"])
	assert.Contains(t, rec["stacks"], "(*testChild).serveConn", "the handler's own function")
	assert.Equal(t, false, rec["truncated"])

	reply, err := c.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply, "the request went on")

	// The next slow request is logged too, and each once: the second
	// record is the second request's.
	c2 := p.dial()
	c2.send("sleep 400ms")
	require.Eventually(t, func() bool { recs = p.logRecords("stacks"); return len(recs) >= 2 }, waitLimit, 10*time.Millisecond, "the second request's stacks")
	reply, err = c2.recv()
	require.NoError(t, err)
	assert.Equal(t, "slept", reply)
	recs = p.logRecords("stacks")
	require.Len(t, recs, 2, "once per request")
	assert.Equal(t, c2.conn.LocalAddr().String(), recs[1]["remote"])
}
