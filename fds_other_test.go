//go:build !linux

package prefork_test

import "errors"

// limitFDs is used by Linux-only tests.
func limitFDs(int) error { return errors.New("limitFDs: Linux only") }
