package prefork_test

import (
	"context"
	"errors"
	"math"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type nopChild struct{}

func (nopChild) ProcessRequest(context.Context, *prefork.Request) error { return nil }

func TestBadConfigurationIsRefusedBeforeAnythingStarts(t *testing.T) {
	t.Parallel()
	newChild := func() prefork.Child { return nopChild{} }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	cases := map[string]struct {
		m    *prefork.Manager
		want string // part of the message
	}{
		"zero value":     {&prefork.Manager{}, "NewChild is nil"},
		"no NewChild":    {&prefork.Manager{Addr: "127.0.0.1:0"}, "NewChild is nil"},
		"no Addr":        {&prefork.Manager{NewChild: newChild}, "Addr is empty"},
		"no port":        {&prefork.Manager{NewChild: newChild, Addr: "127.0.0.1"}, "missing port"},
		"bad port":       {&prefork.Manager{NewChild: newChild, Addr: "127.0.0.1:http-nope"}, "bad port"},
		"bad network":    {&prefork.Manager{NewChild: newChild, Addr: ":0", Network: "sctp"}, `"sctp" is not supported`},
		"no socket path": {&prefork.Manager{NewChild: newChild, Network: "unix"}, "path of the socket file"},
		"reuse-port unix": {
			&prefork.Manager{NewChild: newChild, Network: "unix", Addr: "/tmp/x.sock", ReusePort: true}, "TCP and UDP only"},
		"reuse-port with a Listener": {
			&prefork.Manager{NewChild: newChild, Listener: ln.(syscall.Conn), ReusePort: true}, "unset ReusePort"},
		"negative MinServers": {&prefork.Manager{NewChild: newChild, Addr: ":0", MinServers: -1}, "MinServers is negative"},
		"negative MaxRequests": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxRequests: -3}, "MaxRequests is negative"},
		"negative ShutdownTimeout": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", ShutdownTimeout: -1}, "ShutdownTimeout is negative"},
		"ChildTimerSlack above a second": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", ChildTimerSlack: 2 * time.Second}, "ChildTimerSlack is 2s"},
		"negative MaxLifetime": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxLifetime: -time.Second}, "MaxLifetime is negative (-1s)"},
		"MaxLifetime in nanoseconds": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxLifetime: 3600}, "MaxLifetime is 3.6µs"},
		"negative MaxLifetimeJitter": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxLifetime: time.Hour, MaxLifetimeJitter: -1}, "MaxLifetimeJitter is negative"},
		"negative MaxChildMemory": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxChildMemory: -1}, "MaxChildMemory is negative"},
		"MaxChildMemory in MiB": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxChildMemory: 512}, "MaxChildMemory is 512 bytes"},
		"MaxLifetimeJitter past a century": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxLifetime: time.Hour, MaxLifetimeJitter: math.MaxInt64}, "MaxLifetimeJitter is 2562047h47m16.854775807s, over a century"},
		"ShutdownTimeout past a century": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", ShutdownTimeout: math.MaxInt64}, "ShutdownTimeout is 2562047h47m16.854775807s, over a century"},
		"MaxRequestsJitter past MaxInt32": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxRequests: 10, MaxRequestsJitter: math.MaxInt}, "MaxRequests (10) plus MaxRequestsJitter"},
		"min above max": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MinServers: 8, MaxServers: 4}, "MinServers (8) is greater than MaxServers (4)"},
		"min spare above max spare": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MinSpareServers: 6, MaxSpareServers: 3}, "MinSpareServers (6) is greater than MaxSpareServers (3)"},
		"min spare above max servers": {
			&prefork.Manager{NewChild: newChild, Addr: ":0", MaxServers: 3, MinSpareServers: 4}, "MinSpareServers (4) is greater than MaxServers (3)"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.m.Run(context.Background())
			assert.ErrorIs(t, err, prefork.ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
		})
	}
}

func TestDefaultsFitTheFieldsThatAreSet(t *testing.T) {
	t.Parallel()
	// A MaxServers below the default MinServers lowers that default instead
	// of failing; this one fails only when it binds an address (from
	// TEST-NET-1) that no local interface has.
	m := prefork.Manager{NewChild: func() prefork.Child { return nopChild{} }, Addr: "192.0.2.1:1", MaxServers: 3, MaxSpareServers: 1}
	err := m.Run(context.Background())
	assert.Error(t, err)
	assert.NotErrorIs(t, err, prefork.ErrInvalidConfig)
	assert.ErrorContains(t, err, "listen")
}

// The sentinels' texts are part of the API: programs match them in logs.
func TestSentinelTexts(t *testing.T) {
	for err, text := range map[error]string{
		prefork.ErrInvalidConfig: "prefork: invalid configuration",
		prefork.ErrChildStart:    "prefork: children fail to start",
		prefork.ErrMasterGone:    "prefork: master process is gone",
		prefork.ErrRequestDenied: "prefork: request denied",
		prefork.ErrManagerClosed: "prefork: Manager closed",
	} {
		assert.Equal(t, text, err.Error())
		assert.True(t, errors.Is(err, err))
	}
}

// A socket given to the master that it cannot serve is refused before a
// child starts, with what it is.
func TestListenerThatCannotBeServed(t *testing.T) {
	t.Parallel()
	file, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer file.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed.Close()
	for name, c := range map[string]struct {
		socket syscall.Conn
		want   string
	}{
		"a file":            {file, "not a socket"},
		"a closed listener": {closed.(syscall.Conn), "Manager.Listener"},
	} {
		t.Run(name, func(t *testing.T) {
			m := prefork.Manager{NewChild: func() prefork.Child { return nopChild{} }, Listener: c.socket}
			err := m.Run(context.Background())
			assert.ErrorContains(t, err, c.want)
			assert.NotErrorIs(t, err, prefork.ErrInvalidConfig, "Addr is not needed")
		})
	}
}
