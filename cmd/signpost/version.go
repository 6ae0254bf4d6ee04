package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/signpost-dns/signpost/internal/buildinfo"
)

func init() {
	commands["version"] = command{"print the version, commit and Go version of this binary (also: signpost --version)", runVersion}
}

func runVersion(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("version", "[flags]")
	output := outputFlag(fs, "text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q: version takes none", fs.Arg(0))
	}
	info := buildinfo.Read()
	switch *output {
	case "", "text":
		_, err := fmt.Fprintln(stdout, info)
		return err
	case "json":
		return writeJSON(stdout, info)
	}
	return usagef("-o %q: want text or json", *output)
}

// outputFlag adds -o / --output, the output format.
func outputFlag(fs *flag.FlagSet, choices string) *string {
	o := new(string)
	fs.StringVar(o, "output", "", "output format: "+choices)
	fs.StringVar(o, "o", "", "short for --output")
	return o
}

// writeJSON writes v as indented JSON, for scripts.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// writeJSONLine writes v as one line of JSON, for streams.
func writeJSONLine(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
