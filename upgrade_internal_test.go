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
		{Name: "tcp :8080", Key: "tcp :8080", FD: 5, Owned: true},
		{Name: "echo.socket", FD: 6},
	}
	spec := func(name, addr string) socketSpec { return socketSpec{name: name, network: "tcp", addr: addr} }
	describe := func(specs []socketSpec, unused []wire.UpgradeSocket) []string {
		var out []string
		for _, s := range specs {
			if fd, ok := s.given.(passedSocket); ok {
				out = append(out, fmt.Sprintf("%q fd %d owned %v", s.name, fd, s.owned))
			} else {
				out = append(out, fmt.Sprintf("%q bind %s", s.name, s.addr))
			}
		}
		for _, h := range unused {
			out = append(out, fmt.Sprintf("unused fd %d", h.FD))
		}
		return out
	}
	for _, c := range []struct {
		name   string
		specs  []socketSpec
		single bool
		want   []string
	}{
		{"one socket: all of them", []socketSpec{spec("", ":80")}, true,
			[]string{`"web" fd 4 owned true`, `"tcp :8080" fd 5 owned true`, `"echo.socket" fd 6 owned false`}},
		{"by name, by address, and one to bind", []socketSpec{spec("web", ":81"), spec("", ":8080"), spec("api", ":82")}, false,
			[]string{`"web" fd 4 owned true`, `"" fd 5 owned true`, `"api" bind :82`, "unused fd 6"}},
		{"none of them", []socketSpec{spec("", ":9000")}, false,
			[]string{`"" bind :9000`, "unused fd 4", "unused fd 5", "unused fd 6"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cfg config
			specs := cfg.takeHanded(c.specs, handed, c.single)
			assert.Equal(t, c.want, describe(specs, cfg.unusedHanded))
		})
	}
}
