// Command signpost is DNS-based service discovery for containers: the
// server that is the DNS zone, the agent that follows Docker, and the
// verbs that read and write the registry.
//
// Every flag of every command can also be set from the environment:
// SIGNPOST_<FLAG>, the flag's name upper-cased with dashes turned to
// underscores (--data-dir: SIGNPOST_DATA_DIR). A flag on the command line
// wins over the environment.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

// commands maps subcommand names to their implementations. Other files add
// theirs in init.
var commands = map[string]command{}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: signpost <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'signpost <command> -h' for a command's flags.")
	fmt.Fprintln(w, "Every flag can also be set from the environment as SIGNPOST_<FLAG> (--data-dir: SIGNPOST_DATA_DIR).")
}

// errUsage marks usage errors: main prints them as one line and a pointer
// to -h, never the whole help.
var errUsage = errors.New("usage")

// usageError is a usage error: what is wrong, in one line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return errUsage }

// usagef returns a usage error saying what is wrong.
func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit code: 0, 1 when the
// command failed, 2 for a usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "signpost: no command given")
		fmt.Fprintln(stderr, "Run 'signpost -h' for the list of commands.")
		return 2
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return 0
	case "--version", "-version", "-v":
		args = []string{"version"}
	}
	name := args[0]
	cmd, ok := commands[name]
	if !ok {
		if strings.HasPrefix(name, "-") {
			fmt.Fprintf(stderr, "signpost: flag %s before the command: flags follow it (signpost <command> [flags])\n", name)
		} else {
			fmt.Fprintf(stderr, "signpost: unknown command %q\n", name)
		}
		fmt.Fprintln(stderr, "Run 'signpost -h' for the list of commands.")
		return 2
	}
	err := cmd.run(ctx, args[1:], stdout)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "signpost %s: %s\n", name, oneLine(err.Error()))
		fmt.Fprintf(stderr, "Run 'signpost %s -h' for usage.\n", name)
		return 2
	}
	fmt.Fprintf(stderr, "signpost %s: %v\n", name, err)
	return 1
}

// oneLine keeps the first line of s.
func oneLine(s string) string {
	first, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return first
}

// newFlagSet returns a flag set that reports errors instead of exiting
// and prints its help only when asked (-h).
func newFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("signpost "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: signpost %s %s\n\nflags:\n", name, synopsis)
		printFlags(w, fs)
		fmt.Fprintf(w, "\nEvery flag can also be set from the environment as SIGNPOST_<FLAG>, upper-case,\ndashes as underscores (shown after each flag); the command line wins.\n")
	}
	return fs
}

// EnvPrefix begins the environment variable of every flag (but the
// one-letter short forms, such as -o).
const EnvPrefix = "SIGNPOST_"

// envName is the environment variable that sets the flag named name.
func envName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// printFlags prints fs's flags as flag.PrintDefaults does, with each
// flag's environment variable.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		kind, help := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if len(f.Name) == 1 {
			line = "  -" + f.Name
		}
		if kind != "" {
			line += " " + kind
		}
		help = strings.ReplaceAll(help, "\n", "\n    \t")
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			if kind == "string" {
				help += fmt.Sprintf(" (default %q)", f.DefValue)
			} else {
				help += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		if env := envName(f.Name); len(f.Name) > 1 && !strings.Contains(help, env) {
			help += " [$" + env + "]"
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, help)
	})
}

// parseFlags sets every flag of fs that has an environment variable
// (SIGNPOST_<FLAG>) from it, then parses args over it. A bad flag or value
// becomes a one-line usage error; -h prints the help and returns
// flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		// Empty is unset; -o and the like are short forms, without one.
		if !ok || v == "" || envErr != nil || len(f.Name) == 1 {

			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = usagef("$%s=%q (--%s): %v", envName(f.Name), v, f.Name, err)
		}
	})
	if envErr != nil {
		return envErr
	}
	fs.VisitAll(func(f *flag.Flag) {
		if m, ok := f.Value.(envMarker); ok {
			m.setFromEnv()
		}
	})
	// The flag package prints the error and the whole help on a bad flag;
	// say only what is wrong instead, and print the help on -h alone.
	out, help := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := parseInterleaved(fs, args)
	fs.SetOutput(out)
	fs.Usage = help
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	}
	return usagef("%v", err)
}

// parseInterleaved parses args letting flags follow the arguments
// (signpost services web -o json); after "--" everything is an argument.
func parseInterleaved(fs *flag.FlagSet, args []string) error {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	return fs.Parse(append([]string{"--"}, positional...))
}

// logFlags adds --log-level and --log-format and returns a constructor.
func logFlags(fs *flag.FlagSet) func() (*slog.Logger, error) {
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	format := fs.String("log-format", "text", "log format: text or json")
	return func() (*slog.Logger, error) {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(*level)); err != nil {
			return nil, usagef("--log-level %q: want debug, info, warn or error", *level)
		}
		opts := &slog.HandlerOptions{Level: lv}
		switch strings.ToLower(*format) {
		case "text":
			return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
		case "json":
			return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
		}
		return nil, usagef("--log-format %q: want text or json", *format)
	}
}

// credentialToken is the default of --token-file: the credential "token"
// that systemd's LoadCredential=token:... hands a unit in
// $CREDENTIALS_DIRECTORY (readable by the unit's user, even a dynamic one,
// when the file itself is root's with mode 0600), or "".
func credentialToken() string {
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return ""
	}
	p := filepath.Join(dir, "token")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// tokenFileHelp documents --token-file's default.
const tokenFileHelp = " (default: $CREDENTIALS_DIRECTORY/token when systemd's LoadCredential=token:... provides it)"
