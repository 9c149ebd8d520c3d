// Package preforkstatus serves a prefork pool's snapshot (Manager.Stats)
// over HTTP, as PHP-FPM's status page and Apache's mod_status do: as text
// for people, as JSON for programs, and in the Prometheus text format (or
// OpenMetrics, when the scraper asks for it) for monitoring. Serve it on a
// loopback or administration address, not to the world, and from the
// master alone (the code before Run runs in every child too):
//
//	if !prefork.IsChild() {
//		go http.ListenAndServe("127.0.0.1:9001", preforkstatus.Handler(m))
//	}
//	err := m.Run(ctx)
//
// The handler answers
//
//	GET /              text; ?full adds a line per child
//	GET /?format=json  JSON (also with Accept: application/json)
//	GET /metrics       Prometheus text format 0.0.4, or OpenMetrics 1.0.0
//	                   when Accept asks for application/openmetrics-text
//
// It lives apart from package prefork so that a pool without a status page
// does not link net/http.
package preforkstatus

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prefork-go/prefork"
)

// Handler returns the status page of the pool that m runs. Before Run has
// started, and after it has returned, the page shows an empty pool.
func Handler(m *prefork.Manager) http.Handler { return handler(m.Stats) }

// handler serves what stats returns.
func handler(stats func() prefork.Stats) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		s := stats()
		w.Header().Set("Cache-Control", "no-store")
		switch {
		case r.URL.Path == "/metrics":
			if accepts(r, "application/openmetrics-text") {
				w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
				writeMetrics(w, s, true)
			} else {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
				writeMetrics(w, s, false)
			}
		case r.URL.Path != "/":
			http.NotFound(w, r)
		case r.URL.Query().Get("format") == "json" || accepts(r, "application/json"):
			w.Header().Set("Content-Type", "application/json")
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			enc.Encode(s)
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			writeText(w, s, r.URL.Query().Has("full"))
		}
	})
}

// accepts reports whether r's Accept header names the media type.
func accepts(r *http.Request, mediaType string) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if t, _, err := mime.ParseMediaType(strings.TrimSpace(part)); err == nil && t == mediaType {
			return true
		}
	}
	return false
}

// states is the order in which the page lists children's states.
var states = []prefork.ChildState{
	prefork.ChildStarting, prefork.ChildIdle, prefork.ChildBusy, prefork.ChildParked, prefork.ChildLeaving,
	prefork.ChildRetiring, prefork.ChildStopping, prefork.ChildTimedOut, prefork.ChildKilled,
}

// reasons is the order in which the page lists exit reasons.
var reasons = []prefork.ExitReason{
	prefork.ExitStopped, prefork.ExitRetired, prefork.ExitRestarted, prefork.ExitMaxRequests,
	prefork.ExitMaxLifetime, prefork.ExitMemoryLimit, prefork.ExitRequestTimeout, prefork.ExitStartFailed, prefork.ExitSick, prefork.ExitCrashed,
	prefork.ExitSignaled, prefork.ExitKilled,
}

func countStates(s prefork.Stats) map[prefork.ChildState]int {
	n := make(map[prefork.ChildState]int, len(states))
	for _, c := range s.Children {
		n[c.State]++
	}
	return n
}

func writeText(out io.Writer, s prefork.Stats, full bool) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer w.Flush()
	if s.Time.IsZero() {
		fmt.Fprintln(w, "pool:\tnot running")
		return
	}
	counts := countStates(s)
	var byState []string
	for _, st := range states {
		if counts[st] > 0 {
			byState = append(byState, fmt.Sprintf("%s %d", st, counts[st]))
		}
	}
	var exits []string
	for _, r := range reasons {
		if s.Exits[r] > 0 {
			exits = append(exits, fmt.Sprintf("%s %d", r, s.Exits[r]))
		}
	}
	l := s.Limits
	if len(s.Sockets) > 1 {
		fmt.Fprintf(w, "pool:\t%d sockets\n", len(s.Sockets))
	} else {
		fmt.Fprintf(w, "pool:\t%s %s\n", s.Network, s.Addr)
	}
	fmt.Fprintf(w, "as of:\t%s\n", s.Time.Format(time.RFC3339Nano))
	if s.Stopping {
		fmt.Fprintf(w, "stopping:\tyes\n")
	}
	fmt.Fprintf(w, "limits:\tservers %d..%d, spare %d..%d, max requests %d\n", l.MinServers, l.MaxServers, l.MinSpareServers, l.MaxSpareServers, s.MaxRequests)
	fmt.Fprintf(w, "children:\t%d (%s)\n", len(s.Children), strings.Join(byState, ", "))
	fmt.Fprintf(w, "listen queue:\t%s (max %s)\n", queue(s.Queued), queue(s.MaxQueued))
	if len(s.Sockets) > 1 {
		label := "sockets:"
		for _, sock := range s.Sockets {
			fmt.Fprintf(w, "%s\t%s: %s %s, queue %s (max %s)\n", label, sock.Name, sock.Network, sock.Addr, queue(sock.Queued), queue(sock.MaxQueued))
			label = ""
		}
	}
	fmt.Fprintf(w, "requests:\t%d\n", s.Requests)
	fmt.Fprintf(w, "children started:\t%d\n", s.Started)
	fmt.Fprintf(w, "children exited:\t%s\n", cmp.Or(strings.Join(exits, ", "), "none"))
	fmt.Fprintf(w, "max servers reached:\t%d\n", s.MaxServersReached)
	fmt.Fprintf(w, "slow requests:\t%d\n", s.SlowRequests)
	if !full {
		return
	}
	fmt.Fprintf(w, "\npid\tstate\tserved\tstarted\tbusy for\tclient\trss\n")
	for _, c := range s.Children {
		busy, client, rss := "-", cmp.Or(c.Remote, "-"), "-"
		if !c.BusySince.IsZero() {
			busy = s.Time.Sub(c.BusySince).Round(time.Millisecond).String()
		}
		if c.RSS > 0 {
			rss = fmt.Sprintf("%.1f MiB", float64(c.RSS)/(1<<20))
		}
		fmt.Fprintf(w, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", c.PID, c.State, c.Served, c.Started.Format(time.RFC3339), busy, client, rss)
	}
}

// labelValue escapes a label's value in the exposition formats.
var labelValue = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func queue(n int) string {
	if n < 0 {
		return "unknown"
	}
	return fmt.Sprint(n)
}

// writeMetrics writes s in the Prometheus text format, or in OpenMetrics:
// the same samples, but counters are declared without their _total suffix
// and the exposition ends with # EOF.
func writeMetrics(w io.Writer, s prefork.Stats, openMetrics bool) {
	family := func(name, typ, help string) {
		if typ == "counter" && openMetrics {
			name = strings.TrimSuffix(name, "_total")
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	gauge := func(name, help string, v int) {
		family(name, "gauge", help)
		fmt.Fprintf(w, "%s %d\n", name, v)
	}
	l := s.Limits
	gauge("prefork_min_servers", "The least number of children.", l.MinServers)
	gauge("prefork_max_servers", "The most number of children.", l.MaxServers)
	gauge("prefork_min_spare_servers", "The least number of spare children.", l.MinSpareServers)
	gauge("prefork_max_spare_servers", "The most number of spare children.", l.MaxSpareServers)
	gauge("prefork_max_requests", "Requests a child serves before it is replaced; 0: no limit.", s.MaxRequests)

	family("prefork_children", "gauge", "Children, by state.")
	counts := countStates(s)
	for _, st := range states {
		fmt.Fprintf(w, "prefork_children{state=%q} %d\n", string(st), counts[st])
	}
	// A socket is known by its name and its address together: the
	// sockets that systemd passes under one name share it.
	for _, q := range []struct {
		name, help string
		value      func(prefork.SocketStats) int
	}{
		{"prefork_listen_queue", "Connections waiting in a socket's queue, read while children are busy.", func(s prefork.SocketStats) int { return s.Queued }},
		{"prefork_listen_queue_max", "The most connections seen waiting in a socket's queue.", func(s prefork.SocketStats) int { return s.MaxQueued }},
	} {
		declared := false
		for _, sock := range s.Sockets {
			if sock.Queued < 0 {
				continue // unknown: no sample
			}
			if !declared {
				family(q.name, "gauge", q.help)
				declared = true
			}
			fmt.Fprintf(w, "%s{socket=\"%s\",address=\"%s\"} %d\n", q.name, labelValue.Replace(sock.Name), labelValue.Replace(sock.Network+" "+sock.Addr), q.value(sock))
		}
	}
	counter := func(name, help string, v uint64) {
		family(name, "counter", help)
		fmt.Fprintf(w, "%s %d\n", name, v)
	}
	counter("prefork_requests_total", "Requests begun by children.", s.Requests)
	counter("prefork_children_started_total", "Children started.", s.Started)
	counter("prefork_max_servers_reached_total", "Times connections waited while the pool had MaxServers children.", s.MaxServersReached)
	counter("prefork_slow_requests_total", "Requests that ran for Manager.SlowRequest.", s.SlowRequests)
	family("prefork_child_exits_total", "counter", "Children exited, by reason.")
	for _, r := range reasons {
		fmt.Fprintf(w, "prefork_child_exits_total{reason=%q} %d\n", strings.ReplaceAll(string(r), " ", "_"), s.Exits[r])
	}
	if openMetrics {
		fmt.Fprintln(w, "# EOF")
	}
}
