package prefork

import (
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePassedSockets(t *testing.T) {
	t.Parallel()
	const self = 4242
	for _, c := range []struct {
		pid, n, names string
		fds           []int
		want          []string // names
		err           string
	}{
		{pid: "", n: "2"},                // not activated
		{pid: "4242", n: ""},             // nothing passed
		{pid: "4242", n: "0"},            // nothing passed
		{pid: "1", n: "1", names: "web"}, // for another process
		{pid: "4242", n: "1", fds: []int{3}, want: []string{"unknown"}},
		{pid: "4242", n: "2", names: "web:admin", fds: []int{3, 4}, want: []string{"web", "admin"}},
		{pid: "4242", n: "3", names: "web::x:y", fds: []int{3, 4, 5}, want: []string{"web", "unknown", "x"}},
		{pid: "me", n: "1", err: "LISTEN_PID"},
		{pid: "4242", n: "-1", err: "LISTEN_FDS"},
		{pid: "4242", n: "many", err: "LISTEN_FDS"},
	} {
		p := parsePassedSockets(c.pid, c.n, c.names, self)
		if c.err != "" {
			assert.ErrorContains(t, p.err, c.err, "%+v", c)
			continue
		}
		require.NoError(t, p.err, "%+v", c)
		assert.Equal(t, c.fds, p.fds, "%+v", c)
		assert.Equal(t, c.want, p.names, "%+v", c)
	}
}

// Which sockets the master serves: those it is given, those systemd
// passed (matched by name), and the ones it binds.
func TestTakeSockets(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	given := ln.(syscall.Conn)
	none := passedSockets{}
	one := parsePassedSockets("1", "1", "", 1)
	two := parsePassedSockets("1", "2", "web:admin", 1)
	twins := parsePassedSockets("1", "2", "web.socket:web.socket", 1)
	tcp := func(addr string) Socket { return Socket{Network: "tcp", Addr: addr} }
	named := func(name, addr string) Socket { return Socket{Name: name, Addr: addr} }
	for _, c := range []struct {
		name   string
		m      *Manager
		passed passedSockets
		want   []string // each socket: its name, then "bind ADDR", "fd N" or "given"
		unused []string
		err    string
	}{
		{name: "one to bind", m: &Manager{Addr: ":80"}, passed: none, want: []string{" bind :80"}},
		{name: "one to bind, named", m: &Manager{Addr: ":80", ListenerName: "web"}, passed: none, want: []string{"web bind :80"}},
		{name: "one given", m: &Manager{Listener: given}, passed: two, want: []string{" given"}, unused: []string{"web (descriptor 3)", "admin (descriptor 4)"}},
		{name: "the only one passed", m: &Manager{Addr: ":80"}, passed: one, want: []string{"unknown fd 3"}},
		{name: "all passed", m: &Manager{}, passed: two, want: []string{"web fd 3", "admin fd 4"}},
		{name: "two of one name", m: &Manager{}, passed: twins, want: []string{"web.socket fd 3", "web.socket fd 4"}},
		{name: "one picked by name", m: &Manager{ListenerName: "admin"}, passed: two, want: []string{"admin fd 4"}, unused: []string{"web (descriptor 3)"}},
		{name: "a name not passed", m: &Manager{ListenerName: "api"}, passed: two, err: `ListenerName is "api", but systemd passed no socket of that name (LISTEN_FDNAMES=web:admin)`},
		{name: "a name not passed, with one", m: &Manager{ListenerName: "web"}, passed: one, err: `no socket of that name (LISTEN_FDNAMES=unknown)`},
		{name: "malformed", m: &Manager{Addr: ":80"}, passed: passedSockets{err: assert.AnError}, err: "socket activation"},
		{name: "reuse-port given", m: &Manager{Listener: given, ReusePort: true}, passed: none, err: "unset ReusePort"},
		{name: "reuse-port passed", m: &Manager{ReusePort: true}, passed: one, err: "unset ReusePort"},

		{name: "several to bind", m: &Manager{Sockets: []Socket{tcp(":80"), {Network: "udp", Addr: ":53"}, {Name: "local", Network: "unix", Addr: "/run/x"}}}, passed: none,
			want: []string{" bind :80", " bind :53", "local bind /run/x"}},
		{name: "several, by name under systemd", m: &Manager{Sockets: []Socket{named("admin", ":81"), named("api", ":82"), tcp(":83")}}, passed: two,
			want: []string{"admin fd 4", "api bind :82", " bind :83"}, unused: []string{"web (descriptor 3)"}},
		{name: "several, one given", m: &Manager{Sockets: []Socket{tcp(":80"), {Listener: given}}}, passed: none, want: []string{" bind :80", " given"}},
		{name: "several, a name twice", m: &Manager{Sockets: []Socket{named("a", ":80"), named("a", ":81")}}, passed: none, err: `Manager.Sockets[1].Name "a" is Sockets[0]'s too`},
		{name: "several, and Addr", m: &Manager{Addr: ":80", Sockets: []Socket{tcp(":81")}}, passed: none, err: "Manager.Sockets and Manager.Addr are both set"},
		{name: "several, and Network", m: &Manager{Network: "udp", Sockets: []Socket{tcp(":81")}}, passed: none, err: "Manager.Sockets and Manager.Network are both set"},
		{name: "several, one without Addr", m: &Manager{Sockets: []Socket{tcp(":80"), named("api", "")}}, passed: none, err: "Manager.Sockets[1].Addr is empty"},
		{name: "several, a bad network", m: &Manager{Sockets: []Socket{{Network: "sctp", Addr: ":80"}}}, passed: none, err: `Manager.Sockets[0].Network "sctp" is not supported`},
		{name: "several, reuse-port and Unix", m: &Manager{ReusePort: true, Sockets: []Socket{tcp(":80"), {Network: "unix", Addr: "/run/x"}}}, passed: none,
			err: `not with Manager.Sockets[1].Network "unix"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg config
			cfg.reusePort = c.m.ReusePort
			err := cfg.takeSocketsFrom(c.m, c.passed, nil)
			if c.err != "" {
				assert.ErrorIs(t, err, ErrInvalidConfig)
				assert.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, s := range cfg.sockets {
				switch fd, passed := s.given.(passedSocket); {
				case passed:
					got = append(got, fmt.Sprintf("%s fd %d", s.name, fd))
				case s.given != nil:
					got = append(got, s.name+" given")
				default:
					got = append(got, s.name+" bind "+s.addr)
				}
			}
			assert.Equal(t, c.want, got)
			assert.Equal(t, c.unused, cfg.unusedPassed)
		})
	}
}
