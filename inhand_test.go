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

func TestInHandContended(t *testing.T) {
	var h inHand
	r1 := &Request{}
	h.begin(r1, 1, false)
	ch := r1.Contended()
	require.NotNil(t, ch)
	require.False(t, closed(ch))
	h.letGo(2) // meant for a later request
	require.False(t, closed(ch))
	h.letGo(1)
	require.True(t, closed(ch))
	again := r1.Contended()
	require.False(t, closed(again), "a later ask closes a new channel")
	require.Equal(t, again, r1.Contended(), "the same until then")
	h.letGo(1) // at the client's next wait: no double close
	require.True(t, closed(again))
	h.letGo(1) // before the handler looks again
	require.True(t, closed(r1.Contended()))
	require.False(t, closed(r1.Contended()), "each ask is told once")

	r2 := &Request{}
	h.begin(r2, 2, false)
	require.Nil(t, r1.Contended(), "a request that is over is never asked")
	h.letGo(1) // late, for the request before
	require.False(t, closed(r2.Contended()))

	r3 := &Request{}
	h.begin(r3, 3, false)
	h.letGo(3) // the ask comes before the handler looks
	require.True(t, closed(r3.Contended()))

	r4 := &Request{}
	h.begin(r4, 1<<32+4, false)
	h.letGo(4) // the record carries 32 bits
	require.True(t, closed(r4.Contended()))

	require.Nil(t, (&Request{}).Contended(), "a Request made by hand")
}

func TestInHandCurrent(t *testing.T) {
	var h inHand
	r := &Request{}
	h.begin(r, 7, true)
	got, since := h.current(7)
	require.Same(t, r, got)
	require.False(t, since.IsZero())
	got, _ = h.current(6)
	require.Nil(t, got, "an ask for another request")
	h.end()
	got, _ = h.current(7)
	require.Nil(t, got, "over")
}
