package prefork

import (
	"net"
	"os"
	"os/user"
	"syscall"
	"testing"

	"github.com/prefork-go/prefork/internal/sys"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakePrivileges is a system with a few users and groups, where the
// master runs as euid and egid.
func fakePrivileges(euid, egid, firstPort int) privileges {
	users := []user.User{
		{Username: "root", Uid: "0", Gid: "0"},
		{Username: "www", Uid: "33", Gid: "33"},
		{Username: "nobody", Uid: "65534", Gid: "65534"},
		{Username: "dev", Uid: "1000", Gid: "1000"},
	}
	groups := []user.Group{{Name: "root", Gid: "0"}, {Name: "www-data", Gid: "33"}, {Name: "nogroup", Gid: "65534"}, {Name: "dev", Gid: "1000"}}
	return privileges{
		euid: euid, egid: egid,
		firstUnprivilegedPort: func() int { return firstPort },
		userByName: func(s string) (*user.User, error) {
			return first(users, func(u user.User) bool { return u.Username == s }, user.UnknownUserError(s))
		},
		userByID: func(s string) (*user.User, error) {
			return first(users, func(u user.User) bool { return u.Uid == s }, user.UnknownUserIdError(0))
		},
		groupByName: func(s string) (*user.Group, error) {
			return first(groups, func(g user.Group) bool { return g.Name == s }, user.UnknownGroupError(s))
		},
		groupByID: func(s string) (*user.Group, error) {
			return first(groups, func(g user.Group) bool { return g.Gid == s }, user.UnknownGroupIdError(s))
		},
	}
}

// first returns the first entry of list that matches, or err.
func first[T any](list []T, match func(T) bool, err error) (*T, error) {
	for _, e := range list {
		if match(e) {
			return &e, nil
		}
	}
	return nil, err
}

// Whom the children run as, from User and Group, and what is refused,
// decided without privileges.
func TestCredential(t *testing.T) {
	t.Parallel()
	root, dev := fakePrivileges(0, 0, 1024), fakePrivileges(1000, 1000, 1024)
	as := func(uid, gid uint32) *syscall.Credential {
		return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}
	}
	for name, c := range map[string]struct {
		p           privileges
		user, group string
		want        *syscall.Credential
		err         string // part of the message
	}{
		"neither":                          {root, "", "", nil, ""},
		"a name: its primary group":        {root, "www", "", as(33, 33), ""},
		"a name and a group":               {root, "www", "nogroup", as(33, 65534), ""},
		"a known number":                   {root, "65534", "", as(65534, 65534), ""},
		"an unknown number and a group":    {root, "4321", "www-data", as(4321, 33), ""},
		"numbers without entries":          {root, "4321", "8765", as(4321, 8765), ""},
		"root's group is no privilege":     {root, "www", "root", as(33, 0), ""},
		"an unknown number alone":          {root, "4321", "", nil, "set Group too"},
		"an unknown user":                  {root, "wwww", "", nil, `Manager.User "wwww": user: unknown user wwww`},
		"an unknown group":                 {root, "www", "www-dat", nil, `Manager.Group "www-dat": group: unknown group www-dat`},
		"a group alone":                    {root, "", "www-data", nil, "set User too"},
		"root":                             {root, "root", "", nil, "is root (uid 0)"},
		"uid 0":                            {root, "0", "nogroup", nil, "is root (uid 0)"},
		"-1 is not an id":                  {root, "4294967295", "nogroup", nil, "unknown user 4294967295"},
		"not root: another user":           {dev, "www", "", nil, "only a master that runs as root"},
		"not root: another group":          {dev, "dev", "www-data", nil, "(uid 1000, gid 33) are not the master's own (uid 1000, gid 1000)"},
		"not root: its own, nothing to do": {dev, "dev", "", nil, ""},
		"not root: its own ids":            {dev, "1000", "1000", nil, ""},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := c.p.credential(c.user, c.group)
			if c.err != "" {
				assert.ErrorIs(t, err, ErrInvalidConfig)
				assert.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, got)
			if got != nil {
				assert.NotNil(t, got.Groups, "an empty list clears the supplementary groups")
				assert.False(t, got.NoSetGroups)
			}
		})
	}
}

// The socket file's settings, and the combinations that are refused.
func TestIdentities(t *testing.T) {
	t.Parallel()
	root := fakePrivileges(0, 0, 1024)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	one := func(network, addr string) config {
		return config{sockets: []socketSpec{{field: "Manager.", network: network, addr: addr}}}
	}
	unixAt := func(path string) config { return one("unix", path) }
	reusing := func(network, addr string) config { c := one(network, addr); c.reusePort = true; return c }
	for name, c := range map[string]struct {
		p    privileges
		cfg  config
		m    *Manager
		want *sys.SocketFile
		err  string // part of the message
	}{
		"nothing": {root, unixAt("/run/x.sock"), &Manager{}, nil, ""},
		"a mode": {root, unixAt("/run/x.sock"), &Manager{SocketMode: 0o660},
			&sys.SocketFile{Mode: 0o660, UID: -1, GID: -1}, ""},
		"a group by name": {root, one("unixgram", "/run/x.sock"), &Manager{SocketGroup: "www-data"},
			&sys.SocketFile{UID: -1, GID: 33}, ""},
		"owner and group by number": {root, unixAt("/run/x.sock"), &Manager{SocketUser: "4321", SocketGroup: "8765", SocketMode: 0o600},
			&sys.SocketFile{Mode: 0o600, UID: 4321, GID: 8765}, ""},
		"not root: its own user":        {fakePrivileges(1000, 1000, 1024), unixAt("/run/x.sock"), &Manager{SocketUser: "dev"}, &sys.SocketFile{UID: 1000, GID: -1}, ""},
		"not root: a group it may join": {fakePrivileges(1000, 1000, 1024), unixAt("/run/x.sock"), &Manager{SocketGroup: "www-data"}, &sys.SocketFile{UID: -1, GID: 33}, ""},
		"not root: another user": {fakePrivileges(1000, 1000, 1024), unixAt("/run/x.sock"), &Manager{SocketUser: "www"}, nil,
			"only root can give a file to another user"},
		"an unknown owner":   {root, unixAt("/run/x.sock"), &Manager{SocketUser: "wwww"}, nil, `Manager.SocketUser "wwww"`},
		"an unknown group":   {root, unixAt("/run/x.sock"), &Manager{SocketGroup: "wwww"}, nil, `Manager.SocketGroup "wwww"`},
		"not permissions":    {root, unixAt("/run/x.sock"), &Manager{SocketMode: os.ModeSetgid | 0o660}, nil, "bits other than permissions"},
		"TCP":                {root, one("tcp", ":80"), &Manager{SocketMode: 0o660}, nil, `not to Manager.Network "tcp"`},
		"an abstract socket": {root, unixAt("@x"), &Manager{SocketGroup: "www-data"}, nil, "has no file"},
		"a socket given": {root, config{sockets: []socketSpec{{network: "unix", given: ln.(syscall.Conn), from: "Manager.Listener"}}}, &Manager{SocketMode: 0o660}, nil,
			"the pool is given one (Manager.Listener)"},

		"reuse-port, a privileged port": {root, reusing("tcp", ":80"), &Manager{User: "www"}, nil,
			`as User "www", who cannot bind port 80 (Manager.Addr, below 1024)`},
		"reuse-port, a service name":           {root, reusing("tcp", ":http"), &Manager{User: "www"}, nil, "port 80"},
		"reuse-port, a port any user may bind": {root, reusing("udp", ":8080"), &Manager{User: "www"}, nil, ""},
		"reuse-port, port 0":                   {root, reusing("tcp", ":0"), &Manager{User: "www"}, nil, ""},
		"reuse-port, no privileged ports":      {fakePrivileges(0, 0, 0), reusing("tcp", ":80"), &Manager{User: "www"}, nil, ""},
		"reuse-port, children as the master":   {fakePrivileges(1000, 1000, 1024), reusing("tcp", ":80"), &Manager{User: "dev"}, nil, ""},
		"several sockets, one of them Unix": {root, config{sockets: []socketSpec{{network: "tcp", addr: ":80"}, {network: "unix", addr: "/run/x.sock"}}},
			&Manager{SocketMode: 0o660}, &sys.SocketFile{Mode: 0o660, UID: -1, GID: -1}, ""},
		"several sockets, none with a file": {root, config{sockets: []socketSpec{{network: "tcp", addr: ":80"}, {network: "unix", addr: "@x"}}},
			&Manager{SocketMode: 0o660}, nil, "it binds no Unix socket with a file"},
		"reuse-port, several, one privileged": {root, config{reusePort: true, sockets: []socketSpec{{field: "Manager.Sockets[0].", network: "tcp", addr: ":8080"}, {field: "Manager.Sockets[1].", network: "udp", addr: ":53"}}},
			&Manager{User: "www"}, nil, "cannot bind port 53 (Manager.Sockets[1].Addr"},
		"a bad user first": {root, one("tcp", ":80"), &Manager{User: "wwww", SocketMode: 0o660}, nil, "unknown user"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := c.cfg
			err := cfg.identities(c.m, c.p)
			if c.err != "" {
				assert.ErrorIs(t, err, ErrInvalidConfig)
				assert.ErrorContains(t, err, c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.want, cfg.socketFile)
		})
	}
}
