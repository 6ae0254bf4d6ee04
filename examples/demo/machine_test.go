package demo_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// testLabel is on every container, network and image the agent's Docker
// tests create (internal/agent/internal/dockertest): those tests may run
// at the same time as this one, so what carries it is theirs to add and
// remove.
const testLabel = "signpost.test"

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

func snapshot(t *testing.T) machine {
	t.Helper()
	m := machine{all: map[string]map[string]string{}, other: map[string]bool{}}
	for _, k := range kinds {
		m.all[k.name] = map[string]string{}
		for _, l := range lines(docker(t, k.list...)) {
			id, desc, _ := strings.Cut(l, " ")
			m.all[k.name][id] = desc
		}
		for _, id := range lines(docker(t, k.otherTests...)) {
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

func parent(t *testing.T, image string) string {
	t.Helper()
	return docker(t, "image", "inspect", "-f", "{{.Parent}}", image)
}

// compare fails the test unless every resource present after was present
// before, and every one present before still is: except those of the
// other tests that run beside this one (see testLabel).
func compare(t *testing.T, before, after machine) {
	t.Helper()
	other := func(id string) bool { return before.other[id] || after.other[id] }
	for _, k := range kinds {
		b, a := before.all[k.name], after.all[k.name]
		for _, id := range slices.Sorted(maps.Keys(a)) {
			if _, ok := b[id]; !ok && !other(id) {
				t.Errorf("%s %s (%s) was not there before the demo, and is still there after down", k.name, id, a[id])
			}
		}
		for _, id := range slices.Sorted(maps.Keys(b)) {
			if _, ok := a[id]; !ok && !other(id) {
				t.Errorf("%s %s (%s) was there before the demo, and is gone after down", k.name, id, b[id])
			}
		}
	}
}
