package prefork

import "time"

// The pool's sizing policy: what the master sees in, what to do out. It is
// a plain function of its observations and its own memory, so that every
// situation (a burst, saturated cores, handlers that wait on a database,
// stuck children) can be tested as a table, without a process.
//
// What a child costs depends on what the machine is doing. A child that
// finds the next connection already queued takes it without sleeping, and
// one more child that competes for the listener turns such a queue pop into
// a sleep and a wake-up: when the cores are saturated, more children serve
// fewer requests, and a small pool that lets connections queue beats a
// large one. When the children's handlers sleep on their own I/O (a
// database call), or the cores have room, another child adds capacity, and
// connections that wait in the queue are capacity lost.
//
// So the pool grows when connections wait that no child will take soon, and
// only when another child helps: some CPU is idle, or most busy children are
// asleep in their own I/O or held by clients that keep their connections
// open, or no request at all has been taken for a while (every child is
// held). It grows by what waits, at once. When the cores are
// saturated and the children run rather than sleep, children above
// MinServers are parked: they stay ready, as spares, but out of the
// listener's queue, so that they cost nothing and take no connection from
// a child that would have found it queued.
const (
	// spareCores is how much CPU time, in cores, must have been idle
	// lately for another child to get most of a core. Less than that is
	// noise on a busy machine: the idle moments of a load that saturates
	// the cores, which another child would fill with wake-ups.
	spareCores = 2.0 / 3
	// starveAfter: connections have waited while no child took any
	// request for this long; every child is held, so another helps
	// whatever the CPU does.
	starveAfter = 200 * time.Millisecond
	// parkAfter: the cores have been saturated by running children for
	// this long before children above MinServers are parked.
	parkAfter = 200 * time.Millisecond
	// stuckAfter: an idle child that has taken nothing for this long while
	// connections waited does not count as idle (it was stopped, or cannot
	// accept).
	stuckAfter = time.Second
	// retireInterval is the window over which the least number of spare
	// children is watched; more than MaxSpareServers all through it, and
	// up to retireStep of them are retired at its end. A pool does not
	// shrink and grow again with every ripple of load.
	retireInterval = time.Second
	retireStep     = 4
)

// observation is what the master sees of its pool at one moment.
type observation struct {
	now time.Time
	// Children that take requests, or will, by what they do: starting
	// ones that will serve, and that will be parked; stuck ones are
	// counted among idle too.
	starting, startingParked, idle, busy, parked, stuck int
	// processes counts every child, those on their way out too:
	// MaxServers bounds processes.
	processes int
	// queued is the number of connections that wait in the listener's
	// queue (for datagrams: 1 if any waits), -1 if it cannot be known
	// (reuse-port mode, systems other than Linux).
	queued int
	// idleCores is how many of the machine's cores were idle lately, on
	// average; -1 if unknown.
	idleCores float64
	// blocked is how many of the busy children sampled were asleep in
	// their handler's own I/O, or held by a client for a while (not in a
	// quick exchange with it), out of sampled; sampled is 0 when they
	// were not looked at.
	blocked, sampled int
	// idleClients is how many busy children have waited for their
	// client, in one wait, for idleClientAfter: those that could let an
	// idle client go (see Request.Contended).
	idleClients int
	// begun counts the requests all children have begun, ever: it moves
	// when the pool makes progress.
	begun uint64
	// failing: children failed to start, or died young, and none has
	// stayed up since; no start before startAfter (the back-off).
	failing    bool
	startAfter time.Time
}

// decision is what the master should do now.
type decision struct {
	start       int // children to start, to serve
	startParked int // children to start as parked spares
	unpark      int // parked children to return to the listener
	park        int // serving children to park: idle ones first, then busy ones after their request
	retire      int // spare children to retire: parked ones first
	// contend is how many children with idle clients to ask to let them go
	// (see Request.Contended): connections wait that neither the pool's
	// growth nor its parked children will take.
	contend int
	// atMax: connections wait that the pool would start children for,
	// but MaxServers are there already.
	atMax bool
	// retryIn, when starts were held back by the back-off after
	// failures, is when to look again.
	retryIn time.Duration
}

// policy decides; it keeps what it needs of earlier observations.
type policy struct {
	minServers, maxServers int
	minSpare, maxSpare     int
	// canPark: the children share one listener, and the master can see
	// its queue. (In reuse-port mode a parked child's own queue would
	// wait for nobody.)
	canPark bool

	lastBegun     uint64
	lastProgress  time.Time // a request was begun, or nothing waited
	cpuBoundSince time.Time // zero while another child would help
	windowStart   time.Time // of the retire window
	leastSpare    int       // the fewest spare children seen in the window
}

// helps reports whether another child serving now would add capacity.
func (o *observation) helps() bool {
	switch {
	case o.idleCores < 0 || o.idleCores > spareCores:
		return true
	case o.sampled > 0:
		return 2*o.blocked >= o.sampled
	}
	return false
}

// decide returns what to do now, given what the master sees; it remembers
// what it needs of earlier observations.
func (p *policy) decide(o observation) decision {
	if p.lastProgress.IsZero() || o.begun != p.lastBegun || o.queued <= 0 {
		p.lastBegun, p.lastProgress = o.begun, o.now
	}
	starved := o.queued > 0 && o.now.Sub(p.lastProgress) >= starveAfter
	helps := o.helps()
	switch {
	case helps || starved:
		p.cpuBoundSince = time.Time{}
	case p.cpuBoundSince.IsZero():
		p.cpuBoundSince = o.now
	}

	var d decision
	idle := o.idle - o.stuck // children that will take what comes
	active := o.starting + o.startingParked + o.idle + o.busy + o.parked
	room := max(p.maxServers-o.processes, 0)
	start := func(n int, parked bool) {
		n = min(n, room)
		if n <= 0 {
			return
		}
		room -= n
		if parked {
			d.startParked += n
		} else {
			d.start += n
		}
	}

	// MinServers children exist, whatever the load.
	start(p.minServers-active, false)

	// Work that waits and that no child will take soon: the queued
	// connections beyond the idle and the starting children (which
	// will take one each). Without a queue to read, all children busy
	// stands for one connection waiting.
	waiting := o.queued - idle - o.starting - d.start
	if o.queued < 0 {
		waiting = 0
		if idle == 0 && o.busy > 0 && o.starting == 0 {
			waiting = 1
		}
	}
	if waiting > 0 && (helps || starved) {
		before := d.start
		d.unpark = min(waiting, o.parked)
		d.atMax = waiting-d.unpark > room
		start(waiting-d.unpark, false)
		waiting -= d.unpark + d.start - before
	}
	// What is left waits for a busy child. One whose client only keeps
	// its connection open (HTTP keep-alive) serves nobody: ask it to let
	// that client go, rather than let the queue wait for the client's
	// next request or its idle timeout.
	if o.queued > 0 && waiting > 0 {
		d.contend = min(waiting, o.idleClients)
	}

	// Spare children: MinSpareServers of them, ready or coming, beyond
	// what the queue will take. New spares wait parked where the pool can
	// park: a spare that competes for the listener takes connections that
	// a busy child would have found queued, and under load it is soon
	// busy, and short again. Where children cannot be parked, spares take
	// requests: with the cores saturated they would only add wake-ups, and
	// are not started.
	spare := o.parked + o.startingParked - d.unpark + max(idle+o.starting+d.start-max(o.queued, 0), 0)
	if p.canPark || helps {
		start(p.minSpare-spare, p.canPark)
	}

	// After failures, one start at a time, once the back-off has passed
	// (the master sets it again at each start): a start that hangs does not
	// hold back the others.
	if o.failing && d.start+d.startParked > 0 {
		switch {
		case o.now.Before(o.startAfter):
			d.start, d.startParked, d.retryIn = 0, 0, o.startAfter.Sub(o.now)
		case d.start > 0:
			d.start, d.startParked = 1, 0
		default:
			d.startParked = 1
		}
	}

	// Saturated cores: children above MinServers wait parked.
	serving := o.idle + o.busy
	if p.canPark && !p.cpuBoundSince.IsZero() && o.now.Sub(p.cpuBoundSince) >= parkAfter {
		d.park = max(serving-p.minServers, 0)
	}

	// More children than MaxServers, which SetLimits lowered: the spare
	// ones leave now, busy ones as they become spare.
	if over := active - p.maxServers; over > 0 {
		d.retire = min(over, idle+o.parked)
		d.park = 0
	}

	// Surplus: more spare children than MaxSpareServers all through the
	// window, and more children than MinServers.
	spareNow := idle + o.parked
	if p.windowStart.IsZero() {
		p.windowStart, p.leastSpare = o.now, spareNow
	}
	p.leastSpare = min(p.leastSpare, spareNow)
	if o.now.Sub(p.windowStart) >= retireInterval {
		surplus := min(p.leastSpare-p.maxSpare, active-p.minServers, retireStep)
		if surplus > d.retire && d.start+d.startParked+d.unpark == 0 {
			d.retire = surplus
			d.park = max(d.park-surplus, 0)
		}
		p.windowStart, p.leastSpare = o.now, spareNow
	}
	return d
}
