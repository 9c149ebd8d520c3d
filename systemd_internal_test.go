package prefork

import (
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

func TestChoosePassedSocket(t *testing.T) {
	t.Parallel()
	one := parsePassedSockets("1", "1", "", 1)
	two := parsePassedSockets("1", "2", "web:admin", 1)
	twins := parsePassedSockets("1", "2", "web.socket:web.socket", 1)
	for _, c := range []struct {
		p    passedSockets
		name string
		fd   int
		err  string
	}{
		{passedSockets{}, "", -1, ""},
		{passedSockets{}, "web", -1, ""}, // not activated: the master binds Addr
		{one, "", 3, ""},
		{one, "web", -1, `no socket of that name (LISTEN_FDNAMES=unknown)`},
		{two, "admin", 4, ""},
		{two, "web", 3, ""},
		{two, "", -1, "set Manager.ListenerName"},
		{two, "api", -1, `"api"`},
		{twins, "web.socket", -1, "give each its own FileDescriptorName="},
		{passedSockets{err: assert.AnError}, "", -1, "socket activation"},
	} {
		fd, err := c.p.choose(c.name)
		assert.Equal(t, c.fd, fd, "%+v", c)
		if c.err == "" {
			assert.NoError(t, err)
			continue
		}
		assert.ErrorIs(t, err, ErrInvalidConfig)
		assert.ErrorContains(t, err, c.err)
	}
}
