package demo_test

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// testLabel is on every container, network and image the agent's Docker
// tests create (internal/agent/internal/dockertest): those tests may run
// at the same time as this one, so what carries it is theirs to add and
// remove.
const testLabel = "signpost.test"

// demoLabel is on everything demo.sh creates, with its DEMO_PREFIX as the
// value. Other tests build the demo's images under their own prefix (the
// AWS stack test does): what carries another prefix is theirs.
const demoLabel = "signpost.demo"

// kind is one sort of Docker resource: how to list every one (ID first,
// then a description) and how to list those of other tests.
type kind struct {
	name       string
	list       []string
	otherTests []string
}

var kinds = []kind{
	{"container", []string{"ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.Image}}"},
		[]string{"ps", "-aq", "--no-trunc", "--filter", "label=" + testLabel}},
	{"network", []string{"network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}"},
		[]string{"network", "ls", "-q", "--no-trunc", "--filter", "label=" + testLabel}},
	{"image", []string{"images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"},
		[]string{"images", "-aq", "--no-trunc", "--filter", "label=" + testLabel}},
	{"volume", []string{"volume", "ls", "--format", "{{.Name}} {{.Driver}}"},
		[]string{"volume", "ls", "-q", "--filter", "label=" + testLabel}},
}

// machine is what Docker holds: kind -> ID -> description; and the IDs
// that belong to other tests.
type machine struct {
	all   map[string]map[string]string
	other map[string]bool
}

func snapshot(t *testing.T, ownPrefix string) machine {
	t.Helper()
	m := machine{all: map[string]map[string]string{}, other: map[string]bool{}}
	for _, k := range kinds {
		m.all[k.name] = map[string]string{}
		for _, l := range lines(docker(t, k.list...)) {
			id, desc, _ := strings.Cut(l, " ")
			m.all[k.name][id] = desc
		}
		others := lines(docker(t, k.otherTests...))
		// Another demo's: labelled signpost.demo, but not with this one's
		// prefix.
		anyDemo := lines(docker(t, withFilter(k.otherTests, "label="+demoLabel)...))
		own := lines(docker(t, withFilter(k.otherTests, "label="+demoLabel+"="+ownPrefix)...))
		for _, id := range anyDemo {
			if !slices.Contains(own, id) {
				others = append(others, id)
			}
		}
		for _, id := range others {
			m.other[id] = true
			if k.name == "image" {
				// The layers a build left under another test's image
				// are that test's too.
				for p := parent(t, id); p != "" && !m.other[p]; p = parent(t, p) {
					m.other[p] = true
				}
			}
		}
	}
	return m
}

// withFilter returns the listing args with its label filter replaced.
func withFilter(args []string, filter string) []string {
	out := slices.Clone(args)
	for i := range out {
		if i > 0 && out[i-1] == "--filter" {
			out[i] = filter
		}
	}
	return out
}

func parent(t *testing.T, image string) string {
	t.Helper()
	return docker(t, "image", "inspect", "-f", "{{.Parent}}", image)
}

// compare fails the test unless every resource present after was present
// before, and every one present before still is: except those of the
// other tests that run beside this one (see testLabel and demoLabel).
// Another test's build in progress holds a container and layers that carry
// no label yet, so a difference must last: compare looks again for up to a
// minute before it fails.
func compare(t *testing.T, before machine, ownPrefix string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		diffs := differences(before, snapshot(t, ownPrefix))
		if len(diffs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, d := range diffs {
				t.Error(d)
			}
			return
		}
		time.Sleep(2 * time.Second)
	}
}

// transient says whether a resource is a build's passing step: an
// untagged layer, or the container a build runs a step in (its image is a
// bare ID). Another test's build makes and removes them at any time, with
// no label yet; down never touches them.
func transient(desc string) bool {
	if strings.HasSuffix(desc, "<none>:<none>") {
		return true
	}
	_, image, _ := strings.Cut(desc, " ") // a container: "NAME IMAGE"
	return strings.HasPrefix(image, "sha256:")
}

// differences says what differs between two snapshots, but for other
// tests' resources.
func differences(before, after machine) []string {
	var diffs []string
	other := func(id string) bool { return before.other[id] || after.other[id] }
	for _, k := range kinds {
		b, a := before.all[k.name], after.all[k.name]
		for _, id := range slices.Sorted(maps.Keys(a)) {
			if _, ok := b[id]; !ok && !other(id) {
				diffs = append(diffs, fmt.Sprintf("%s %s (%s) was not there before the demo, and is still there after down", k.name, id, a[id]))
			}
		}
		for _, id := range slices.Sorted(maps.Keys(b)) {
			if _, ok := a[id]; !ok && !other(id) && !transient(b[id]) {
				diffs = append(diffs, fmt.Sprintf("%s %s (%s) was there before the demo, and is gone after down", k.name, id, b[id]))
			}
		}
	}
	return diffs
}
