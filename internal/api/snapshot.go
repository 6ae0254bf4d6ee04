package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
)

// pruneEvery is how many new service snapshots are made between two
// sweeps of the snapshots of services that no longer exist.
const pruneEvery = 1024

// snapshots holds the encoded answers of the large reads, made once per
// revision and shared by every client that asks for that revision: a
// client that reads slowly, or not at all, holds a reference to shared
// bytes, never a copy of its own.
type snapshots struct {
	ix *registry.Index

	mu sync.Mutex
	// service holds, per service, its last encoded list.
	service map[string]*serviceSnapshot
	// made counts the services entered since the last prune.
	made int
	// all is the last encoded GET /v1/instances.
	all *snapshot
}

// serviceSnapshot is the last snapshot of one service. Its lock makes the
// clients that ask at once wait for one lookup, rather than each copy the
// service's instances.
type serviceSnapshot struct {
	mu  sync.Mutex
	cur *snapshot
	// ixRev is the latest index revision cur is known current at.
	ixRev int64
}

// snapshot is one revision of a list, encoded once as compact JSON, which
// the events of a watch carry; the indented answer of a GET is made from
// it the first time it is asked for. Every field but ixRev is
// read-only once made.
type snapshot struct {
	rev int64 // the service's revision (for all: the index's)
	// dataRev is the revision of the data of forAll (the index may have
	// moved on between the lookup and the read).
	dataRev int64

	// value gives what to encode; set before the snapshot is shared,
	// dropped once it is encoded.
	value       func() any
	compactOnce sync.Once
	compact     []byte
	err         error

	bodyOnce sync.Once
	body     []byte // indented JSON, for GET
}

func newSnapshots(ix *registry.Index) *snapshots {
	return &snapshots{ix: ix, service: map[string]*serviceSnapshot{}}
}

// encoded makes the compact JSON, once; every caller waits for it.
func (sn *snapshot) encoded() *snapshot {
	sn.compactOnce.Do(func() {
		sn.compact, sn.err = json.Marshal(sn.value())
		sn.value = nil
	})
	return sn
}

// indented is the answer of a GET.
func (sn *snapshot) indented() []byte {
	sn.bodyOnce.Do(func() {
		var buf bytes.Buffer
		buf.Grow(len(sn.compact) * 5 / 4)
		if err := json.Indent(&buf, sn.compact, "", "  "); err != nil {
			sn.body = sn.compact // cannot happen: compact is valid JSON
			return
		}
		buf.WriteByte('\n')
		sn.body = buf.Bytes()
	})
	return sn.body
}

// writeEvent writes the server-sent event of a watch, around the shared
// compact JSON (which has no newline, as an event's data line must not).
func (sn *snapshot) writeEvent(w io.Writer) error {
	if _, err := fmt.Fprintf(w, "id: %d\nevent: service\ndata: ", sn.rev); err != nil {
		return err
	}
	if _, err := w.Write(sn.compact); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n\n")
	return err
}

// forService returns the encoded current list of service name.
func (s *snapshots) forService(name string) *snapshot {
	ixRev := s.ix.Rev()
	s.mu.Lock()
	e := s.service[name]
	if e == nil {
		e = &serviceSnapshot{}
		s.keep(name, e)
	}
	s.mu.Unlock()
	e.mu.Lock()
	if e.cur == nil || e.ixRev < ixRev {
		list, rev := s.ix.Instances(name)
		if e.cur == nil || e.cur.rev != rev {
			e.cur = &snapshot{rev: rev, value: func() any {
				return apiclient.WatchEvent{Service: name, Index: rev, Instances: list}
			}}
		}
		e.ixRev = ixRev // the list is at least as new as ixRev
		if len(list) == 0 {
			s.forget(name, e)
		}
	}
	cur := e.cur
	e.mu.Unlock()
	return cur.encoded()
}

// keep stores the entry of a service seen for the first time, and now
// and then forgets the services gone since. s.mu is held.
func (s *snapshots) keep(name string, e *serviceSnapshot) {
	s.service[name] = e
	if s.made++; s.made < pruneEvery {
		return
	}
	s.made = 0
	live := map[string]bool{}
	for _, n := range s.ix.ServiceNames() {
		live[n] = true
	}
	for n := range s.service {
		if !live[n] && n != name {
			delete(s.service, n)
		}
	}
}

// forget drops the entry of a service that has no instances.
func (s *snapshots) forget(name string, e *serviceSnapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.service[name] == e {
		delete(s.service, name)
	}
}

// forAll returns the encoded list of every instance.
func (s *snapshots) forAll() *snapshot {
	rev := s.ix.Rev()
	s.mu.Lock()
	cur := s.all
	if cur == nil || cur.rev != rev {
		sn := &snapshot{rev: rev}
		sn.value = func() any {
			list, dataRev := s.ix.All()
			sn.dataRev = dataRev
			return list
		}
		cur, s.all = sn, sn
	}
	s.mu.Unlock()
	return cur.encoded()
}

// serveSnapshot answers with a shared encoded list. all says it is the
// list of every instance (whose revision is its data's).
func (a *API) serveSnapshot(w http.ResponseWriter, sn *snapshot, all bool) {
	if sn.err != nil {
		a.fail(w, http.StatusInternalServerError, "encode answer: "+sn.err.Error(), "")
		return
	}
	rev := sn.rev
	if all {
		rev = sn.dataRev
	}
	body := sn.indented()
	w.Header().Set(apiclient.IndexHeader, strconv.FormatInt(rev, 10))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
