// Package poolflags gives the benchmark's servers the echo example's flags
// for a Manager, so that the benchmark starts every prefork server alike.
package poolflags

import (
	"flag"
	"log/slog"
	"os"

	"github.com/prefork-go/prefork"
)

// Register defines, on the default flag set, the flags that configure m:
// -addr, -reuse-port, the pool's limits, -max-requests, -timer-slack and
// -v. Call Logger after flag.Parse.
func Register(m *prefork.Manager) (verbose *bool) {
	flag.StringVar(&m.Addr, "addr", "127.0.0.1:9000", "address to listen on (host:port)")
	flag.BoolVar(&m.ReusePort, "reuse-port", false, "each child binds its own socket with SO_REUSEPORT")
	flag.IntVar(&m.MinServers, "min-servers", prefork.DefaultMinServers, "least number of children")
	flag.IntVar(&m.MaxServers, "max-servers", prefork.DefaultMaxServers, "most number of children")
	flag.IntVar(&m.MinSpareServers, "min-spare-servers", prefork.DefaultMinSpareServers, "least number of idle children")
	flag.IntVar(&m.MaxSpareServers, "max-spare-servers", prefork.DefaultMaxSpareServers, "most number of idle children")
	flag.IntVar(&m.MaxRequests, "max-requests", 0, "requests (connections) a child serves before it is replaced (0: no limit)")
	flag.DurationVar(&m.ChildTimerSlack, "timer-slack", 0, "the children's timer slack (Manager.ChildTimerSlack; 0: the default, negative: inherited)")
	return flag.Bool("v", false, "log children's starts and exits")
}

// Logger is the servers' logger: text on standard error, with debug
// records when verbose.
func Logger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
