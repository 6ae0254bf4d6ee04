package zonexfr

import (
	"sync"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/dnsserver"
)

// delta is the difference between two versions of the zone (RFC 1995).
type delta struct {
	from, to uint32
	del, add []dns.RR
}

// journal keeps the zone's last version and the differences that led to
// it, bounded by count and by records (Config.JournalSerials and
// JournalRecords): oldest dropped first.
type journal struct {
	src                   *dnsserver.Server
	maxDeltas, maxRecords int

	mu      sync.Mutex
	cur     *dnsserver.ZoneView
	deltas  []delta // oldest first; each one's to is the next one's from
	records int
}

// sync brings the journal to the zone as it is now, and returns it.
func (j *journal) sync() *dnsserver.ZoneView {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.syncLocked()
}

func (j *journal) syncLocked() *dnsserver.ZoneView {
	if j.cur != nil && j.src.Serial() == j.cur.Serial() {
		return j.cur
	}
	v := j.src.View()
	old := j.cur
	j.cur = v
	switch {
	case old == nil || v.Serial() == old.Serial() || len(old.Services()) == 0:
		// From an empty zone (the server before its registry loaded)
		// the difference is the whole zone: AXFR is as good, and it
		// is not kept.
		return v
	case !dnsserver.SerialLess(old.Serial(), v.Serial()):
		// The serial went back: nothing journaled leads here.
		j.deltas, j.records = nil, 0
		return v
	}
	d := delta{from: old.Serial(), to: v.Serial()}
	for _, name := range v.Changed(old) {
		del, add := diff(old.Records(name), v.Records(name))
		d.del = append(d.del, del...)
		d.add = append(d.add, add...)
	}
	j.deltas = append(j.deltas, d)
	j.records += len(d.del) + len(d.add)
	for len(j.deltas) > 0 && (len(j.deltas) > j.maxDeltas || j.records > j.maxRecords) {
		j.records -= len(j.deltas[0].del) + len(j.deltas[0].add)
		j.deltas[0] = delta{}
		j.deltas = j.deltas[1:]
	}
	return v
}

// answerKind is what an IXFR gets.
type answerKind int

const (
	current     answerKind = iota // the client has this serial or a newer one: a single SOA
	incremental                   // the deltas from the client's serial
	whole                         // the client's serial is not journaled: the whole zone
)

// since returns the zone now and what a secondary at serial needs.
func (j *journal) since(serial uint32) (*dnsserver.ZoneView, answerKind, []delta) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.syncLocked()
	return j.sinceLocked(serial)
}

func (j *journal) sinceLocked(serial uint32) (*dnsserver.ZoneView, answerKind, []delta) {
	v := j.cur
	if serial == v.Serial() || dnsserver.SerialLess(v.Serial(), serial) {
		return v, current, nil
	}
	for i, d := range j.deltas {
		if d.from == serial {
			return v, incremental, append([]delta(nil), j.deltas[i:]...)
		}
	}
	return v, whole, nil
}

// peek is since without bringing the journal up to date, for the UDP
// packet path, which must not wait: ok is false when the journal is busy
// or behind the zone (serial, the server's now).
func (j *journal) peek(serial, now uint32) (_ *dnsserver.ZoneView, _ answerKind, _ []delta, ok bool) {
	if !j.mu.TryLock() {
		return nil, 0, nil, false
	}
	defer j.mu.Unlock()
	if j.cur == nil || j.cur.Serial() != now {
		return nil, 0, nil, false
	}
	v, kind, deltas := j.sinceLocked(serial)
	return v, kind, deltas, true
}

// size returns how many differences the journal holds, and their records.
func (j *journal) size() (deltas, records int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.deltas), j.records
}

// diff returns what is in old and not in new (deleted) and what is in new
// and not in old (added), each in its list's order.
func diff(old, new []dns.RR) (del, add []dns.RR) {
	in := make(map[string]bool, len(old))
	for _, rr := range old {
		in[rr.String()] = true
	}
	kept := make(map[string]bool, len(new))
	for _, rr := range new {
		k := rr.String()
		kept[k] = true
		if !in[k] {
			add = append(add, rr)
		}
	}
	for _, rr := range old {
		if !kept[rr.String()] {
			del = append(del, rr)
		}
	}
	return del, add
}
