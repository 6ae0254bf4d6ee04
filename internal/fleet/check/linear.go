package check

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/signpost-dns/signpost/internal/fleet/history"
)

// Check 1's other half: the writers' registers and deregisters, checked
// for linearizability by porcupine against a model of the registry (a set
// of instance IDs; a deregister of an ID that is not there answers 404),
// as etcd's robustness suite checks etcd. Each writer's IDs are its own
// and used once, so the model partitions by ID and every partition is a
// few operations. An operation whose outcome is unknown is resolved from
// the store's history: applied (then it answered, at the latest, when a
// client first heard of its revision) or dropped.

// setOp is an operation on one instance ID.
type setOp struct {
	kind history.Kind
	id   string
}

// setResult is what the client learnt: applied, or (a deregister) 404.
type setResult struct{ found bool }

var setModel = porcupine.Model{
	Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var ids []string
		for _, o := range ops {
			id := o.Input.(setOp).id
			if by[id] == nil {
				ids = append(ids, id)
			}
			by[id] = append(by[id], o)
		}
		sort.Strings(ids)
		out := make([][]porcupine.Operation, 0, len(ids))
		for _, id := range ids {
			out = append(out, by[id])
		}
		return out
	},
	// The state of a partition: whether its ID is registered.
	Init: func() any { return false },
	Step: func(state, input, output any) (bool, any) {
		there, in, out := state.(bool), input.(setOp), output.(setResult)
		if in.kind == history.Register {
			return true, true
		}
		if out.found {
			return there, false
		}
		return !there, there
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(setOp), output.(setResult)
		if in.kind == history.Deregister && !out.found {
			return fmt.Sprintf("deregister(%s) -> 404", in.id)
		}
		return fmt.Sprintf("%s(%s) -> ok", in.kind, in.id)
	},
	DescribeState: func(state any) string {
		if state.(bool) {
			return "registered"
		}
		return "absent"
	},
}

// linearTimeout bounds porcupine's search; a search cut short says so.
const linearTimeout = time.Minute

func checkLinearizable(m *model, r *Report, dir string) {
	var ops []porcupine.Operation
	clients := map[string]int{}
	acked := map[string]bool{} // IDs whose deregister was acknowledged
	for _, o := range m.h.Ops {
		if o.Kind == history.Deregister && o.Outcome == history.OK {
			acked[o.ID] = true
		}
	}
	for _, o := range m.h.Ops {
		if o.Kind != history.Register && o.Kind != history.Deregister {
			continue
		}
		in := m.insts[o.ID]
		ret := o.Return
		found := true
		switch {
		case o.Outcome == history.OK:
		case o.Outcome == history.Failed && o.Kind == history.Deregister && o.Status == http.StatusNotFound:
			found = false
		case o.Outcome == history.Unknown && in != nil && o.Kind == history.Register && in.put != 0:
			ret = m.knownBy(in.put)
		case o.Outcome == history.Unknown && in != nil && o.Kind == history.Deregister && in.del != 0 && !acked[o.ID]:
			ret = m.knownBy(in.del)
		default:
			continue // refused before the store, or not applied
		}
		if ret == never {
			ret = m.h.End + 1
		}
		c, ok := clients[o.Client]
		if !ok {
			c = len(clients)
			clients[o.Client] = c
		}
		ops = append(ops, porcupine.Operation{ClientId: c, Input: setOp{o.Kind, o.ID}, Call: o.Invoke, Output: setResult{found}, Return: ret})
	}
	r.Checked["porcupine operations"] = len(ops)
	res, info := porcupine.CheckOperationsVerbose(setModel, ops, linearTimeout)
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		r.add(1, "linearizable", 0, "porcupine did not finish within %s on %d operations", linearTimeout, len(ops))
		return
	}
	what := "the writes are not linearizable (porcupine)"
	if dir != "" {
		p := filepath.Join(dir, "linearizability.html")
		if err := porcupine.VisualizePath(setModel, info, p); err == nil {
			what += "; see " + p
		}
	}
	// The smallest history that shows it: each instance ID whose
	// operations porcupine cannot linearize, with all of them.
	byID := map[string][]history.Op{}
	for _, o := range m.h.Ops {
		if o.Kind == history.Register || o.Kind == history.Deregister {
			byID[o.ID] = append(byID[o.ID], o)
		}
	}
	for _, part := range setModel.Partition(ops) {
		if porcupine.CheckOperations(setModel, part) {
			continue
		}
		id := part[0].Input.(setOp).id
		var steps []string
		for _, o := range byID[id] {
			steps = append(steps, fmt.Sprintf("%s %s via %s %s-%s %s (rev %d)", o.Kind, o.ID, o.Server, secs(o.Invoke), secs(o.Return), o.Outcome, o.Rev))
		}
		r.add(1, "linearizable", part[0].Call, "%s: %s", what, steps)
	}
}
