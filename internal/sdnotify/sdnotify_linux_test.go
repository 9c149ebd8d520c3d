package sdnotify

import (
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A name after '@' is in Linux's abstract namespace, as systemd's own
// notification socket can be: no file.
func TestSendToAbstractSocket(t *testing.T) {
	t.Parallel()
	name := fmt.Sprintf("@prefork-sdnotify-test-%d-%s", os.Getpid(), t.Name())
	conn := receiver(t, name)
	s, err := New(name)
	require.NoError(t, err)
	require.NoError(t, s.Send("STOPPING=1"))
	assert.Equal(t, "STOPPING=1", receive(t, conn))
	_, err = os.Stat(name[1:])
	assert.ErrorIs(t, err, os.ErrNotExist, "no file")
}
