//go:build !linux

package main

import (
	"fmt"
	"os"
)

// The benchmark reads /proc for CPU time and memory: it runs on Linux only.
func main() {
	fmt.Fprintln(os.Stderr, "preforkbench: Linux only (it reads /proc)")
	os.Exit(2)
}
