package dnsserver

import (
	"sync/atomic"

	"github.com/signpost-dns/signpost/internal/registry"
)

// tagIndex is one service version's tags that have names (see
// registry.TagLabel), each a view of the instances that carry it:
// _<tag>._sub._<service>._<proto>.Z PTR, _<tag>._<service>._<proto>.Z SRV
// and <tag>.tag.<service>.Z SRV, A and AAAA answer from it.
type tagIndex struct {
	views map[string]*view // by label
	// proto says whether an instance of each protocol carries a tag:
	// whether _sub._<service>._<proto>.Z has names below it.
	proto [2]bool
}

// tagIndex returns the service's tags: its own, or while the builder
// makes them, its previous version's.
func (svc *service) tagIndex() *tagIndex { return current(&svc.tags, &svc.staleTags) }

// current returns what own holds, or while the builder makes it, what
// stale holds.
func current[T any](own, stale *atomic.Pointer[T]) *T {
	if t := own.Load(); t != nil {
		return t
	}
	if t := stale.Load(); t != nil {
		return t
	}
	// The builder stores the new one before it drops the stale one.
	return own.Load()
}

// viewChunk is how many tag views are allocated at once: a service whose
// instances carry thousands of distinct tags costs a few allocations per
// hundred of them.
const viewChunk = 128

// buildTags indexes the service's instances by tag, in one pass: O(n·t)
// for n instances of at most registry.MaxTags tags each. A view hands out
// the instances of the service's own answers that carry the tag (serving,
// with its fail-open).
func (svc *service) buildTags() *tagIndex {
	t := &tagIndex{}
	var chunk []view
	j := 0 // serving is a subsequence of all, in the same order
	for k, in := range svc.all {
		serving := j < len(svc.serving) && svc.serving[j] == in
		if serving {
			j++
		}
		if len(in.Tags) == 0 {
			continue
		}
		p := protoTCP
		if in.Protocol == registry.UDP {
			p = protoUDP
		}
		for _, tag := range in.Tags {
			l, ok := registry.TagLabel(tag)
			if !ok || len(l) > svc.tagRoom {
				continue
			}
			if t.views == nil {
				t.views = map[string]*view{}
			}
			v := t.views[l]
			if v == nil {
				if len(chunk) == 0 {
					chunk = make([]view, viewChunk)
				}
				v, chunk = &chunk[0], chunk[1:]
				v.name, v.tag = svc.name, l
				t.views[l] = v
				// A tag's first instance shares the service's array
				// (capped: a second one makes the view its own), so
				// that tags carried by one instance each cost no more.
				v.all = svc.all[k : k+1 : k+1]
				if serving {
					v.serving = v.all
				}
			} else if v.all[len(v.all)-1] == in {
				continue // the same tag twice, or in two cases
			} else {
				v.all = append(v.all, in)
				if serving {
					v.serving = append(v.serving, in)
				}
			}
			v.hasProto[p] = true
			t.proto[p] = true
		}
	}
	for _, v := range t.views {
		if len(v.serving) == len(v.all) {
			v.serving = v.all // every instance healthy: one array
		}
	}
	return t
}

// view returns the view of the tag labelled l, nil when no instance
// carries it.
func (t *tagIndex) view(l []byte) *view {
	if t == nil {
		return nil
	}
	return t.views[string(l)]
}

// any reports whether an instance carries a tag of protocol p, or of
// either when p < 0: whether tag.<service>.Z or _sub._<service>._<proto>.Z
// have names below them.
func (t *tagIndex) any(p int) bool {
	if t == nil {
		return false
	}
	if p < 0 {
		return t.proto[protoTCP] || t.proto[protoUDP]
	}
	return t.proto[p]
}
