package prefork

import (
	"fmt"
	"runtime/debug"
)

// PanicError is a panic in a hook, recovered. In a child, a panic ends the
// child (its state may be broken): the connection is closed, Shutdown and
// Run get the PanicError, and the master replaces the child. In the master,
// a panicking hook stops Run, which returns the PanicError; a panic in
// ManagerHooks.Signal is only logged, and DefaultSignal decides instead.
// Test for it with errors.As.
type PanicError struct {
	Hook  string // the hook that panicked, such as "ProcessRequest"
	Value any    // what it panicked with
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string { return fmt.Sprintf("prefork: panic in %s: %v", e.Hook, e.Value) }

// Unwrap returns the panic's value if it is an error.
func (e *PanicError) Unwrap() error {
	err, _ := e.Value.(error)
	return err
}

// guard calls f and turns a panic in it into a *PanicError.
func guard(hook string, f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Hook: hook, Value: v, Stack: debug.Stack()}
		}
	}()
	return f()
}
