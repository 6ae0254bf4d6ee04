package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
)

func init() {
	commands["watch"] = command{"follow the registry live and print each instance that comes, goes or changes health", runWatch}
}

// change is one line of `signpost watch`: an instance that was there at
// the start, came, went or changed.
type change struct {
	Time     time.Time         `json:"time"`
	Op       string            `json:"op"` // present, added, removed, changed
	Index    int64             `json:"index"`
	Instance registry.Instance `json:"instance"`
	// Was is the health status before, for "changed".
	Was string `json:"was,omitempty"`
}

func runWatch(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("watch", "[flags] [SERVICE]")
	mkClient := clientFlags(fs)
	output := outputFlag(fs, "json (one object a line)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return usagef("one SERVICE at most, got %d: %s", fs.NArg(), strings.Join(fs.Args(), " "))
	}
	switch *output {
	case "", "table", "json":
	default:
		return usagef("-o %q: want json (default: one line of text a change)", *output)
	}
	service := ""
	if fs.NArg() == 1 {
		name, _, err := registry.ParseServiceName(fs.Arg(0))
		if err != nil {
			return usagef("SERVICE: %v", err)
		}
		service = name
	}
	c, err := mkClient()
	if err != nil {
		return err
	}
	w := &watcher{out: stdout, json: *output == "json", seen: map[string]map[string]registry.Instance{}}
	// snapshot reads the current state and its revision.
	snapshot := func() ([]registry.Instance, int64, error) {
		if service == "" {
			return c.Instances(ctx, "")
		}
		resp, err := c.Service(ctx, service, 0, 0)
		if err != nil && !apiclient.IsStatus(err, 404) {
			return nil, 0, err
		}
		return resp.Instances, resp.Index, nil
	}
	// The current state first, then every change after its revision.
	start, index, err := snapshot()
	if err != nil {
		return err
	}
	if err := w.start(start, index); err != nil {
		return err
	}
	bo := time.Second
	for reconnect := false; ; reconnect = true {
		// After a break the state is read again and compared with what
		// was printed: the server may be back on another store, whose
		// revisions are below index (a new data dir, say).
		if reconnect {
			var list []registry.Instance
			var rev int64
			if list, rev, err = snapshot(); err == nil {
				index = rev
				if err := w.resync(list, index); err != nil {
					return err
				}
			}
		}
		var writeErr error
		if err == nil {
			err = c.Watch(ctx, service, index, func(ev apiclient.WatchEvent) error {
				bo = time.Second
				if ev.Index > index {
					index = ev.Index
				}
				writeErr = w.event(ev)
				return writeErr
			})
		}
		if ctx.Err() != nil {
			return nil // Ctrl-C: done
		}
		if writeErr != nil {
			return writeErr // stdout is gone (| head, say)
		}
		var ae *apiclient.Error
		if errors.As(err, &ae) && ae.Status/100 == 4 {
			return err
		}
		fmt.Fprintf(os.Stderr, "signpost watch: %v; again in %s\n", err, bo)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(bo):
		}
		bo = min(2*bo, 30*time.Second)
	}
}

// watcher turns the stream's whole-service lists into one line per
// instance that changed.
type watcher struct {
	out  io.Writer
	json bool
	seen map[string]map[string]registry.Instance // service -> id -> instance
}

func (w *watcher) start(list []registry.Instance, index int64) error {
	registry.SortInstances(list)
	for _, in := range list {
		if w.seen[in.Service] == nil {
			w.seen[in.Service] = map[string]registry.Instance{}
		}
		w.seen[in.Service][in.ID] = in
		if err := w.print(change{Time: time.Now(), Op: "present", Index: index, Instance: in}); err != nil {
			return err
		}
	}
	return nil
}

// resync compares a fresh list of the state at index with what was
// printed, and prints the difference.
func (w *watcher) resync(list []registry.Instance, index int64) error {
	now := map[string][]registry.Instance{}
	for _, in := range list {
		now[in.Service] = append(now[in.Service], in)
	}
	services := make([]string, 0, len(now)+len(w.seen))
	for svc := range now {
		services = append(services, svc)
	}
	for svc := range w.seen {
		if _, ok := now[svc]; !ok {
			services = append(services, svc)
		}
	}
	sort.Strings(services)
	for _, svc := range services {
		if err := w.event(apiclient.WatchEvent{Service: svc, Index: index, Instances: now[svc]}); err != nil {
			return err
		}
	}
	return nil
}

func (w *watcher) event(ev apiclient.WatchEvent) error {
	if ev.Reset != nil {
		// The server sends the whole state again: a service printed
		// before and not named now is gone.
		live := make(map[string]bool, len(ev.Reset.Services))
		for _, svc := range ev.Reset.Services {
			live[svc] = true
		}
		var gone []string
		for svc := range w.seen {
			if !live[svc] {
				gone = append(gone, svc)
			}
		}
		sort.Strings(gone)
		for _, svc := range gone {
			if err := w.event(apiclient.WatchEvent{Service: svc, Index: ev.Index}); err != nil {
				return err
			}
			delete(w.seen, svc)
		}
		return nil
	}
	old := w.seen[ev.Service]
	now := make(map[string]registry.Instance, len(ev.Instances))
	var lines []change
	t := time.Now()
	for _, in := range ev.Instances {
		now[in.ID] = in
		prev, ok := old[in.ID]
		switch {
		case !ok:
			lines = append(lines, change{Time: t, Op: "added", Index: ev.Index, Instance: in})
		case prev.Health.Status != in.Health.Status || !registry.SameRegistration(&prev, &in):
			lines = append(lines, change{Time: t, Op: "changed", Index: ev.Index, Instance: in, Was: prev.Health.Status})
		}
	}
	for id, in := range old {
		if _, ok := now[id]; !ok {
			lines = append(lines, change{Time: t, Op: "removed", Index: ev.Index, Instance: in})
		}
	}
	sort.Slice(lines, func(i, j int) bool { return lines[i].Instance.ID < lines[j].Instance.ID })
	w.seen[ev.Service] = now
	for _, l := range lines {
		if err := w.print(l); err != nil {
			return err
		}
	}
	return nil
}

// print writes one change: a JSON object, or a line of text such as
//
//	12:04:05 added    calc  calc-1-8081  10.0.0.7:8081 tcp  passing  node=host1 container=calc-1
func (w *watcher) print(c change) error {
	if w.json {
		return writeJSONLine(w.out, c)
	}
	in := c.Instance
	health := in.Health.Status
	if c.Op == "changed" && c.Was != in.Health.Status {
		health = c.Was + " -> " + in.Health.Status
	}
	where := "node=" + orDash(in.Node)
	if in.Node == "" {
		where = "(by hand)"
	}
	if in.Container != "" {
		where += " container=" + in.Container
	}
	line := fmt.Sprintf("%s %-8s %s  %s  %s %s  %s  %s", c.Time.Local().Format(time.TimeOnly), c.Op, in.Service, in.ID,
		netip.AddrPortFrom(in.Address, in.Port), in.Protocol, health, where)
	if in.Health.Output != "" && in.Health.Status != registry.HealthPassing {
		line += "  (" + strings.Join(strings.Fields(in.Health.Output), " ") + ")"
	}
	_, err := fmt.Fprintln(w.out, line)
	return err
}
