package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
)

// snapshots holds the encoded answers of the large reads, made once per
// revision and shared by every client that asks for that revision: a
// client that reads slowly, or not at all, holds a reference to shared
// bytes, never a copy of its own.
type snapshots struct {
	ix *registry.Index

	mu sync.Mutex
	// service holds, per service, its last encoded list.
	service map[string]*snapshot
	// all is the last encoded GET /v1/instances.
	all *snapshot
}

// snapshot is one encoded revision. Its fields are built once (under
// once) and read-only after.
type snapshot struct {
	rev   int64 // the service's revision (for all: the index's)
	ixRev int64 // the latest index revision it is known current at; guarded by snapshots.mu
	once  sync.Once
	list  []registry.Instance
	body  []byte // indented JSON, for GET
	event []byte // server-sent event, for /v1/watch
	err   error
	// dataRev is the revision of the data of forAll (the index may have
	// moved on between the lookup and the read).
	dataRev int64
}

func newSnapshots(ix *registry.Index) *snapshots {
	return &snapshots{ix: ix, service: map[string]*snapshot{}}
}

// forService returns the encoded current list of service name.
func (s *snapshots) forService(name string) *snapshot {
	ixRev := s.ix.Rev()
	s.mu.Lock()
	cur := s.service[name]
	fresh := cur != nil && cur.ixRev == ixRev
	s.mu.Unlock()
	if fresh {
		return cur.build(name)
	}
	list, rev := s.ix.Instances(name)
	s.mu.Lock()
	if cur = s.service[name]; cur == nil || cur.rev != rev {
		cur = &snapshot{rev: rev, list: list}
		if len(list) == 0 {
			delete(s.service, name)
		} else {
			s.service[name] = cur
		}
	}
	if ixRev > cur.ixRev {
		cur.ixRev = ixRev
	}
	s.mu.Unlock()
	return cur.build(name)
}

// build encodes the snapshot the first time it is asked for.
func (sn *snapshot) build(service string) *snapshot {
	sn.once.Do(func() {
		resp := apiclient.ServiceResponse{Service: service, Index: sn.rev, Instances: sn.list}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		if sn.err = enc.Encode(resp); sn.err != nil {
			return
		}
		sn.body = buf.Bytes()
		data, err := json.Marshal(apiclient.WatchEvent(resp))
		if sn.err = err; err != nil {
			return
		}
		sn.event = fmt.Appendf(nil, "id: %d\nevent: service\ndata: %s\n\n", sn.rev, data)
		sn.list = nil // the bytes are all that is served from now on
	})
	return sn
}

// forAll returns the encoded list of every instance.
func (s *snapshots) forAll() *snapshot {
	rev := s.ix.Rev()
	s.mu.Lock()
	cur := s.all
	if cur == nil || cur.rev != rev {
		cur = &snapshot{rev: rev, ixRev: rev}
		s.all = cur
	}
	s.mu.Unlock()
	cur.once.Do(func() {
		list, dataRev := s.ix.All()
		cur.dataRev = dataRev
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", "  ")
		cur.err = enc.Encode(list)
		cur.body = buf.Bytes()
	})
	return cur
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
	w.Header().Set(apiclient.IndexHeader, strconv.FormatInt(rev, 10))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(sn.body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(sn.body)
}
