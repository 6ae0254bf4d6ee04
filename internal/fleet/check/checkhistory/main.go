// Command checkhistory checks a fleet history that a run saved
// (SIGNPOST_FLEET_OUT): go run ./internal/fleet/check/checkhistory FILE.
// It prints the report and exits 1 when a promise was broken.
package main

import (
	"fmt"
	"os"

	"github.com/signpost-dns/signpost/internal/fleet/check"
	"github.com/signpost-dns/signpost/internal/fleet/history"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: checkhistory fleet-history-SEED.json")
		os.Exit(2)
	}
	h, err := history.Load(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	r, err := check.Check(h, check.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Print(r)
	if !r.OK() {
		os.Exit(1)
	}
}
