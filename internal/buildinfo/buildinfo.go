// Package buildinfo says which signpost is running: the module version,
// the VCS commit it was built from and the Go version, as the Go toolchain
// recorded them in the binary (runtime/debug.ReadBuildInfo), and exports
// them as the signpost_build_info metric.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Info is what the binary knows about its own build. Fields the toolchain
// did not record are "unknown" (Revision when built outside a git tree,
// say).
type Info struct {
	// Path is the main module's path.
	Path string `json:"path"`
	// Version is the main module's version: a tag such as v1.2.0, a
	// pseudo-version, or "(devel)" for a build from a work tree.
	Version string `json:"version"`
	// Revision is the VCS commit (vcs.revision).
	Revision string `json:"revision"`
	// Time is the commit's time (vcs.time), RFC 3339.
	Time string `json:"time,omitempty"`
	// Modified is true when the work tree had uncommitted changes.
	Modified bool `json:"modified"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"go_version"`
}

// Read returns the running binary's build information.
func Read() Info {
	info := Info{Path: "unknown", Version: "unknown", Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	info.Path = bi.Main.Path
	if bi.Main.Version != "" {
		info.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the one line `signpost version` prints.
func (i Info) String() string {
	rev := i.Revision
	if i.Modified {
		rev += " (modified)"
	}
	s := fmt.Sprintf("signpost %s, commit %s", i.Version, rev)
	if i.Time != "" {
		s += " of " + i.Time
	}
	return s + ", built with " + i.GoVersion
}

// Register adds the gauge signpost_build_info{version,revision,goversion},
// always 1, to reg: the usual Prometheus way to see which build runs.
func Register(reg prometheus.Registerer) error {
	i := Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "signpost_build_info",
		Help: "Which signpost build is running: module version, VCS commit and Go version as labels; always 1.",
		ConstLabels: prometheus.Labels{
			"version":   i.Version,
			"revision":  i.Revision,
			"goversion": i.GoVersion,
		},
	})
	g.Set(1)
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("register signpost_build_info: %w", err)
	}
	return nil
}
