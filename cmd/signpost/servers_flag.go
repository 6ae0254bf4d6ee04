package main

import (
	"flag"
	"strings"

	"github.com/signpost-dns/signpost/internal/apiclient"
)

// defaultServer is --server's default.
const defaultServer = "http://127.0.0.1:8080"

// serverList is --server: one or more signpost server URLs, comma-separated
// or with the flag repeated (SIGNPOST_SERVER takes a comma-separated
// list). The first value set replaces the default, and the first one on
// the command line replaces the environment's: the command line wins.
type serverList struct {
	values  []string
	defined bool // a value was set (from the environment or the command line)
	env     bool // the values came from the environment
}

func (l *serverList) String() string {
	if l == nil || !l.defined {
		return defaultServer
	}
	return strings.Join(l.values, ",")
}

func (l *serverList) Set(v string) error {
	if !l.defined || l.env {
		l.values, l.defined, l.env = nil, true, false
	}
	// Checked at once, so that the error names the flag's value.
	if _, err := apiclient.ParseServers(v); err != nil {
		return err
	}
	l.values = append(l.values, v)
	return nil
}

// setFromEnv marks the values set so far as the environment's.
func (l *serverList) setFromEnv() { l.env = l.defined }

// URLs is the list of servers, checked: each URL valid, none twice.
func (l *serverList) URLs() ([]string, error) {
	if !l.defined {
		return []string{defaultServer}, nil
	}
	return apiclient.ParseServers(l.values...)
}

// serverFlag adds --server to fs.
func serverFlag(fs *flag.FlagSet) *serverList {
	l := &serverList{}
	fs.Var(l, "server", "`URL` of the signpost server API; several servers sharing one store (etcd): comma-separated or the flag repeated, the first preferred, failing over to the next when one does not answer")
	return l
}

// envMarker is a flag value that must know which of its values came from
// the environment (parseFlags calls setFromEnv after reading it).
type envMarker interface{ setFromEnv() }
