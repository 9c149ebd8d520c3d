package prefork

import (
	"fmt"
	"testing"

	"github.com/prefork-go/prefork/internal/wire"
	"github.com/stretchr/testify/assert"
)

// Which sockets a master takes over from the one it succeeds: in the
// one-socket case all of them; otherwise by name, or by network and
// address for an unnamed one; the others are left over.
func TestTakeHanded(t *testing.T) {
	t.Parallel()
	handed := []wire.UpgradeSocket{
		{Name: "web", Key: "tcp :80", FD: 4, Owned: true},
		{Name: "tcp 127.0.0.1:8080", Key: "tcp :8080", FD: 5, Owned: true},
		{Name: "echo.socket", FD: 6},
	}
	spec := func(name, addr string) socketSpec { return socketSpec{name: name, network: "tcp", addr: addr} }
	describe := func(specs []socketSpec, unused []wire.UpgradeSocket) []string {
		var out []string
		for _, s := range specs {
			if fd, ok := s.given.(passedSocket); ok {
				out = append(out, fmt.Sprintf("%q fd %d key %q owned %v", s.name, fd, s.key(), s.owned))
			} else {
				out = append(out, fmt.Sprintf("%q bind %s", s.name, s.addr))
			}
		}
		for _, h := range unused {
			out = append(out, fmt.Sprintf("unused fd %d", h.FD))
		}
		return out
	}
	own := handed[:2] // without systemd's
	for _, c := range []struct {
		name   string
		handed []wire.UpgradeSocket
		specs  []socketSpec
		single bool
		want   []string
	}{
		{"one socket: its own by address", handed, []socketSpec{spec("", ":8080")}, true,
			[]string{`"tcp 127.0.0.1:8080" fd 5 key "tcp :8080" owned true`, "unused fd 4", "unused fd 6"}},
		{"one socket: systemd's, all of them", []wire.UpgradeSocket{{Name: "a", FD: 4}, {Name: "b", FD: 5}}, []socketSpec{spec("", ":8080")}, true,
			[]string{`"a" fd 4 key "" owned false`, `"b" fd 5 key "" owned false`}},
		{"names before keys, one socket each", []wire.UpgradeSocket{{Name: "public", Key: "tcp :0", FD: 4}, {Name: "admin", Key: "tcp :0", FD: 5}, {Name: "tcp 127.0.0.1:1", Key: "tcp :0", FD: 6}},
			[]socketSpec{spec("", ":0"), spec("admin", ":0"), spec("public", ":0")}, false,
			[]string{`"tcp 127.0.0.1:1" fd 6 key "tcp :0" owned false`, `"admin" fd 5 key "tcp :0" owned false`, `"public" fd 4 key "tcp :0" owned false`}},
		{"a name given anew", []wire.UpgradeSocket{{Name: "tcp [::]:80", Key: "tcp :80", FD: 4, Owned: true}}, []socketSpec{spec("web", ":80")}, false,
			[]string{`"web" fd 4 key "tcp :80" owned true`}},
		{"one socket at a new address: systemd's are served in its place", handed, []socketSpec{spec("", ":9000")}, true,
			[]string{`"echo.socket" fd 6 key "" owned false`, "unused fd 4", "unused fd 5"}},
		{"one socket at a new address", own, []socketSpec{spec("", ":9000")}, true,
			[]string{`"" bind :9000`, "unused fd 4", "unused fd 5"}},
		{"one socket named", handed, []socketSpec{spec("web", ":81")}, true,
			[]string{`"web" fd 4 key "tcp :80" owned true`, "unused fd 5", "unused fd 6"}},
		{"by name, by address, and one to bind", handed, []socketSpec{spec("web", ":81"), spec("", ":8080"), spec("api", ":82")}, false,
			[]string{`"web" fd 4 key "tcp :80" owned true`, `"tcp 127.0.0.1:8080" fd 5 key "tcp :8080" owned true`, `"api" bind :82`, "unused fd 6"}},
		{"none of them", handed, []socketSpec{spec("", ":9000")}, false,
			[]string{`"" bind :9000`, "unused fd 4", "unused fd 5", "unused fd 6"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg config
			specs := cfg.takeHanded(c.specs, c.handed, c.single)
			assert.Equal(t, c.want, describe(specs, cfg.unusedHanded))
		})
	}
}
