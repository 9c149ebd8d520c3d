package prefork

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestContention(t *testing.T) {
	var c contention
	c.begin(1)
	r1 := &Request{contention: &c, seq: 1}
	ch := r1.Contended()
	require.NotNil(t, ch)
	require.False(t, closed(ch))
	c.signal(2) // meant for a later request
	require.False(t, closed(ch))
	c.signal(1)
	require.True(t, closed(ch))
	c.signal(1) // twice: no double close
	require.True(t, closed(r1.Contended()))

	c.begin(2)
	require.Nil(t, r1.Contended(), "a request that is over is never asked")
	c.signal(1) // late, for the request before
	r2 := &Request{contention: &c, seq: 2}
	require.False(t, closed(r2.Contended()))

	c.begin(3)
	c.signal(3) // the ask comes before the handler looks
	require.True(t, closed((&Request{contention: &c, seq: 3}).Contended()))

	c.begin(1<<32 + 4)
	c.signal(4) // the record carries 32 bits
	require.True(t, closed((&Request{contention: &c, seq: 1<<32 + 4}).Contended()))

	require.Nil(t, (&Request{}).Contended(), "a Request made by hand")
}
