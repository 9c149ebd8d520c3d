package prefork_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/prefork-go/prefork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A pool serves a socket the program gives it beside one it binds, and
// leaves the given one open and taking connections when it stops.
func TestSeveralSocketsOneGiven(t *testing.T) {
	given, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer given.Close()
	cfg := helperConfig{Sockets: []prefork.Socket{{Name: "bound", Addr: "127.0.0.1:0"}}, Min: 1, Max: 2, MinSpare: 1, MaxSpare: 1}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	_, p, wait := runMasterHere(t, ctx, cfg, func(m *prefork.Manager) {
		m.Sockets = append(m.Sockets, prefork.Socket{Name: "given", Listener: given.(*net.TCPListener)})
	})
	for _, c := range []struct{ addr, name string }{{p.addr, "bound"}, {given.Addr().String(), "given"}} {
		conn := dialClient(t, "tcp", c.addr)
		assert.Equal(t, c.name, conn.ask("socket"))
		conn.conn.Close()
	}
	stop()
	require.NoError(t, wait())

	_, err = net.Dial("tcp", p.addr)
	assert.Error(t, err, "the socket the pool bound is closed")
	late, err := net.Dial("tcp", given.Addr().String())
	require.NoError(t, err, "the given socket still listens")
	defer late.Close()
	given.(*net.TCPListener).SetDeadline(time.Now().Add(waitLimit))
	conn, err := given.Accept()
	require.NoError(t, err, "and its connections are the program's")
	conn.Close()
}
