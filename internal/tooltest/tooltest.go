// Package tooltest finds the outside programs that some tests drive (curl,
// wrk). A test whose program is missing is skipped, with the package to
// install; with PREFORK_REQUIRE_TOOLS=1 in the environment, as CI sets it
// after installing them, it fails instead, so that a missing program
// cannot pass for a passing test.
package tooltest

import (
	"os"
	"os/exec"
	"testing"
)

// EnvRequire names the variable that turns skips into failures.
const EnvRequire = "PREFORK_REQUIRE_TOOLS"

// Program returns the path of the program name, or ends the test: skipped,
// or failed under EnvRequire=1. pkg is the Debian package that has it.
func Program(tb testing.TB, name, pkg string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv(EnvRequire) == "1" {
		tb.Fatalf("%s is not installed (Debian package %s), and %s=1 requires it: %v", name, pkg, EnvRequire, err)
	}
	tb.Skipf("%s is not installed (Debian package %s): %v", name, pkg, err)
	return ""
}
