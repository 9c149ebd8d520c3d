package prefork

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/prefork-go/prefork/internal/board"
)

// The policy is tested as a table of situations: observations in the
// order the master would make them, and what it should decide at the last.
func TestPolicy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// An observation of a pool of the default size, serving and idle, on
	// a quiet machine of 2 cores.
	quiet := func(ms int) observation {
		return observation{now: at(ms), idle: 5, processes: 5, queued: 0, idleCores: 2}
	}
	for _, tc := range []struct {
		name    string
		canPark bool
		steps   []observation
		want    decision
	}{
		{
			name:    "empty pool: MinServers start, serving",
			canPark: true,
			steps:   []observation{{now: at(0), idleCores: 2}},
			want:    decision{start: 5},
		},
		{
			name:    "quiet pool: nothing to do",
			canPark: true,
			steps:   []observation{quiet(0), quiet(20)},
			want:    decision{},
		},
		{
			name:    "burst on an idle machine: start what waits, at once, and parked spares",
			canPark: true,
			steps: []observation{
				quiet(0),
				{now: at(20), busy: 5, processes: 5, queued: 25, idleCores: 2, begun: 5},
			},
			want: decision{start: 15, startParked: 0, atMax: true}, // MaxServers 20
		},
		{
			name:    "children already starting count against what waits",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 5, starting: 10, processes: 15, queued: 12, idleCores: 2, begun: 5},
			},
			want: decision{start: 2, startParked: 2},
		},
		{
			name:    "saturated cores, connections queued: no growth, spares parked",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 5, processes: 5, queued: 3, idleCores: 0.1, sampled: 5, begun: 100},
				{now: at(20), busy: 5, processes: 5, queued: 3, idleCores: 0.1, sampled: 5, begun: 300},
			},
			want: decision{startParked: 2},
		},
		{
			name:    "saturated cores: parked spares are enough, the queue is left to the serving",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 5, parked: 2, processes: 7, queued: 3, idleCores: 0, sampled: 5, begun: 100},
			},
			want: decision{},
		},
		{
			name:    "saturated cores for parkAfter: children above MinServers park",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 9, idle: 2, processes: 11, queued: 0, idleCores: 0.2, sampled: 8, begun: 100},
				{now: at(100), busy: 9, idle: 2, processes: 11, queued: 0, idleCores: 0.2, sampled: 8, begun: 200},
				{now: at(220), busy: 9, idle: 2, processes: 11, queued: 0, idleCores: 0.2, sampled: 8, begun: 300},
			},
			want: decision{park: 6},
		},
		{
			name:    "a ripple of saturation shorter than parkAfter parks nothing",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 9, idle: 2, processes: 11, idleCores: 0.2, sampled: 8, begun: 100},
				{now: at(100), busy: 9, idle: 2, processes: 11, idleCores: 1.5, begun: 200},
				{now: at(220), busy: 9, idle: 2, processes: 11, idleCores: 0.2, sampled: 8, begun: 300},
			},
			want: decision{},
		},
		{
			name:    "handlers asleep in their own I/O: grow though the cores are busy",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 5, parked: 2, processes: 7, queued: 27, idleCores: 0.3, blocked: 5, sampled: 5, begun: 100},
			},
			want: decision{unpark: 2, start: 13, atMax: true}, // to MaxServers
		},
		{
			name:    "I/O-bound pool that serves everyone: stays, no parking",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 18, parked: 2, processes: 20, queued: 0, idleCores: 0.3, blocked: 7, sampled: 8, begun: 100},
				{now: at(300), busy: 18, parked: 2, processes: 20, queued: 0, idleCores: 0.3, blocked: 8, sampled: 8, begun: 400},
			},
			want: decision{},
		},
		{
			name:    "every child held, cores busy: starved after starveAfter, grow",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 5, parked: 2, processes: 7, queued: 4, idleCores: 0, sampled: 5, begun: 50},
				{now: at(100), busy: 5, parked: 2, processes: 7, queued: 4, idleCores: 0, sampled: 5, begun: 50},
				{now: at(210), busy: 5, parked: 2, processes: 7, queued: 4, idleCores: 0, sampled: 5, begun: 50},
			},
			want: decision{unpark: 2, start: 2, startParked: 2},
		},
		{
			name:    "stuck idle children do not count: start others",
			canPark: true,
			steps: []observation{
				{now: at(0), idle: 2, stuck: 2, busy: 2, processes: 4, queued: 1, idleCores: 1.8, begun: 10},
			},
			want: decision{start: 1, startParked: 2}, // to MinServers, and it takes what waits
		},
		{
			name:    "MaxServers reached: nothing more starts",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 20, processes: 20, queued: 9, idleCores: 1.5, begun: 10},
			},
			want: decision{atMax: true},
		},
		{
			name:    "MaxServers reached, children whose clients are idle: ask them to let go",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 20, idleClients: 6, processes: 20, queued: 9, idleCores: 1.5, begun: 10},
			},
			want: decision{contend: 6, atMax: true},
		},
		{
			name:    "MaxServers reached: ask no more children than connections wait",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 20, idleClients: 6, processes: 20, queued: 2, idleCores: 1.5, begun: 10},
			},
			want: decision{contend: 2, atMax: true},
		},
		{
			name:    "room to grow: idle clients keep their children, new children take what waits",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 10, idleClients: 6, processes: 10, queued: 4, idleCores: 1.5, begun: 10},
			},
			want: decision{start: 4, startParked: 2},
		},
		{
			name:    "growth short of what waits: the rest from idle clients",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 18, idleClients: 6, processes: 18, queued: 5, idleCores: 1.5, begun: 10},
			},
			want: decision{start: 2, contend: 3, atMax: true},
		},
		{
			name:    "MaxServers lowered below the pool: spare children leave now",
			canPark: true,
			steps: []observation{
				{now: at(0), idle: 2, parked: 2, busy: 20, processes: 24, queued: 0, idleCores: 1.5, begun: 10},
			},
			want: decision{retire: 4},
		},
		{
			name:    "MaxServers lowered below the pool, every child busy: none leaves yet",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 24, processes: 24, queued: 0, idleCores: 1.5, begun: 10},
			},
			want: decision{},
		},
		{
			name:    "children on their way out still count against MaxServers",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 15, processes: 19, queued: 9, idleCores: 1.5, begun: 10},
			},
			want: decision{start: 1, atMax: true},
		},
		{
			name:    "surplus spares all through the window: a few retire",
			canPark: true,
			steps: []observation{
				{now: at(0), idle: 18, processes: 18, idleCores: 2},
				{now: at(500), idle: 16, processes: 18, busy: 2, idleCores: 2, begun: 2},
				{now: at(1000), idle: 18, processes: 18, idleCores: 2, begun: 2},
			},
			want: decision{retire: retireStep},
		},
		{
			name:    "a dip below MaxSpareServers in the window: nothing retires",
			canPark: true,
			steps: []observation{
				{now: at(0), idle: 18, processes: 18, idleCores: 2},
				{now: at(500), idle: 6, busy: 12, processes: 18, idleCores: 2, begun: 12},
				{now: at(1000), idle: 18, processes: 18, idleCores: 2, begun: 12},
			},
			want: decision{},
		},
		{
			name:    "queue unknown: all busy stands for one waiting, spares serve",
			canPark: false,
			steps: []observation{
				{now: at(0), busy: 5, processes: 5, queued: -1, idleCores: 2, begun: 10},
			},
			want: decision{start: 2}, // one for what waits, and it is not a spare for long
		},
		{
			name:    "crash loop: no start during the back-off, and when to look again",
			canPark: true,
			steps: []observation{
				{now: at(0), processes: 0, idleCores: 2, failing: true, startAfter: at(400)},
			},
			want: decision{retryIn: 400 * time.Millisecond},
		},
		{
			name:    "crash loop: after the back-off, one start, serving",
			canPark: true,
			steps: []observation{
				{now: at(500), idle: 2, processes: 2, idleCores: 2, failing: true, startAfter: at(400)},
			},
			want: decision{start: 1},
		},
		{
			name:    "crash loop: a start that hangs does not hold back the next one",
			canPark: true,
			steps: []observation{
				{now: at(500), idle: 2, starting: 1, processes: 3, idleCores: 2, failing: true, startAfter: at(400)},
			},
			want: decision{start: 1},
		},
		{
			name:    "queue unknown, cores saturated: no spare that would compete",
			canPark: false,
			steps: []observation{
				{now: at(0), busy: 5, processes: 5, queued: -1, idleCores: 0.1, sampled: 5, begun: 10},
			},
			want: decision{},
		},
		{
			name:    "CPU unknown: growth as if the cores had room",
			canPark: true,
			steps: []observation{
				{now: at(0), busy: 5, processes: 5, queued: 2, idleCores: -1, begun: 10},
			},
			want: decision{start: 2, startParked: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := policy{minServers: 5, maxServers: 20, minSpare: 2, maxSpare: 10, canPark: tc.canPark}
			var d decision
			for _, o := range tc.steps {
				d = p.decide(o)
			}
			assert.Equal(t, tc.want, d)
		})
	}
}

// Under saturated cores, a pool that keeps being observed neither grows
// nor churns: the same census, looked at every watchInterval for ten
// seconds, starts the parked spares once and then nothing.
func TestPolicySteadyUnderSaturation(t *testing.T) {
	p := policy{minServers: 5, maxServers: 20, minSpare: 2, maxSpare: 10, canPark: true}
	t0 := time.Unix(1000, 0)
	started := 0
	parked := 0
	for i := range 500 {
		o := observation{now: t0.Add(time.Duration(i) * watchInterval), busy: 5, parked: parked,
			processes: 5 + parked, queued: 3, idleCores: 0.1, sampled: 5, begun: uint64(100 * i)}
		d := p.decide(o)
		assert.Zero(t, d.start+d.unpark+d.retire, "step %d: %+v", i, d)
		started += d.startParked
		parked += d.startParked
	}
	assert.Equal(t, 2, started, "MinSpareServers parked spares, once")
}

// While the master watches, a child that takes the last idle slot wakes it
// when the pool could grow, at most every alarmPause; within a pause the
// master looks again as the pause ends.
func TestNextAlarm(t *testing.T) {
	for _, tc := range []struct {
		name       string
		canGrow    bool
		sinceAlarm time.Duration
		when       uint32
		lookIn     time.Duration
	}{
		{"cannot grow", false, time.Hour, board.AlarmOff, watchInterval},
		{"cannot grow, alarm just now", false, 0, board.AlarmOff, watchInterval},
		{"can grow", true, time.Hour, board.AlarmNoIdle, watchInterval},
		{"can grow, pause over", true, alarmPause, board.AlarmNoIdle, watchInterval},
		{"can grow, alarm just now", true, 0, board.AlarmOff, alarmPause},
		{"can grow, pause under way", true, 2 * time.Millisecond, board.AlarmOff, alarmPause - 2*time.Millisecond},
	} {
		when, lookIn := nextAlarm(tc.canGrow, tc.sinceAlarm)
		assert.Equal(t, tc.when, when, tc.name)
		assert.Equal(t, tc.lookIn, lookIn, tc.name)
	}
}
