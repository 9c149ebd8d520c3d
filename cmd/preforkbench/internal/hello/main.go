// Command hello prints one line and exits. The benchmark builds it static
// and starts copies of it to time the cold start of a small Go program that
// uses none of the prefork library: the floor under the time the library
// takes to start or replace a child.
package main

import "fmt"

func main() {
	fmt.Println("hello")
}
