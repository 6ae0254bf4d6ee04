package registry

import (
	"fmt"
	"time"
)

// Prepare returns a normalized copy of in, or the *FieldError that makes it
// unfit to store. Stores call it on every instance they are given.
func Prepare(in Instance) (Instance, error) {
	in = in.Clone()
	in.Normalize()
	if err := in.Validate(); err != nil {
		return in, err
	}
	return in, nil
}

// Unchanged reports whether writing in over old would change nothing at
// all, not even the time of the last check.
func Unchanged(old, in *Instance) bool {
	return SameRegistration(old, in) && old.Health.CheckedAt.Equal(in.Health.CheckedAt)
}

// PrepareNodeSet checks the arguments of Store.ReplaceNode and returns the
// instances normalized, each owned by node, by ID. Stores call it first, so
// that all of them refuse the same input with the same *FieldError.
func PrepareNodeSet(node string, ttl time.Duration, insts []Instance) (map[string]Instance, error) {
	// The node name is checked even when insts is empty: it is a key in
	// the store whatever the node owns.
	if err := CheckNode(node); err != nil {
		return nil, err
	}
	if err := CheckNode(node); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, &FieldError{Field: "ttl", Value: ttl.String(), Reason: "must be positive"}
	}
	want := make(map[string]Instance, len(insts))
	for i, raw := range insts {
		raw.Node = node
		in, err := Prepare(raw)
		if err != nil {
			return nil, fmt.Errorf("instances[%d] (%q): %w", i, raw.ID, err)
		}
		if _, dup := want[in.ID]; dup {
			return nil, &FieldError{Field: "id", Value: in.ID, Reason: "appears twice"}
		}
		want[in.ID] = in
	}
	return want, nil
}
