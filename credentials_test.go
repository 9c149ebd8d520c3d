package prefork_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
)

// Run checks User, Group and the socket file's settings against the
// system's users and groups before anything starts. (Each rule is tested
// in TestCredential and TestIdentities.)
func TestUnknownAccountsAreRefused(t *testing.T) {
	t.Parallel()
	newChild := func() prefork.Child { return nopChild{} }
	sock := filepath.Join(t.TempDir(), "s")
	type refusal struct {
		m    *prefork.Manager
		want string // part of the message
	}
	cases := map[string]refusal{
		"an unknown user": {&prefork.Manager{NewChild: newChild, Addr: ":0", User: "prefork-no-such-user"}, `Manager.User "prefork-no-such-user"`},
		"an unknown group": {&prefork.Manager{NewChild: newChild, Addr: ":0", User: "65534", Group: "prefork-no-such-group"},
			`Manager.Group "prefork-no-such-group"`},
		"a group alone": {&prefork.Manager{NewChild: newChild, Addr: ":0", Group: "65534"}, "set User too"},
		"an unknown socket group": {&prefork.Manager{NewChild: newChild, Network: "unix", Addr: sock, SocketGroup: "prefork-no-such-group"},
			`Manager.SocketGroup "prefork-no-such-group"`},
		"a socket mode for TCP": {&prefork.Manager{NewChild: newChild, Addr: ":0", SocketMode: 0o660}, `not to Manager.Network "tcp"`},
	}
	if os.Geteuid() != 0 && os.Geteuid() != 4321 {
		cases["not root"] = refusal{&prefork.Manager{NewChild: newChild, Addr: ":0", User: "4321", Group: "4321"}, "only a master that runs as root"}
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := c.m.Run(context.Background())
			assert.ErrorIs(t, err, prefork.ErrInvalidConfig)
			assert.ErrorContains(t, err, c.want)
			_, statErr := os.Lstat(sock)
			assert.ErrorIs(t, statErr, os.ErrNotExist, "nothing was bound")
		})
	}
}
