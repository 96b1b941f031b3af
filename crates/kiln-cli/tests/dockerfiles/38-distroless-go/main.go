package main

import "fmt"

func main() {
	fmt.Println("hello from a static Go binary built by kiln")
}
