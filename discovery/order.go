package discovery

import (
	"cmp"
	"slices"
)

// order returns the instances in the order a client should try them, as
// RFC 2782 describes: lowest priority first; within one priority, pick at
// random with a chance proportional to weight, remove the pick, repeat.
//
// One deviation: RFC 2782 draws from [0, sum], which gives the first
// instance one extra chance in sum+1 (weights 1 and 3 would share the
// traffic 40/60, not 25/75). This draws from [1, sum], so the shares are
// exactly proportional to the weights, and weight-0 instances come only
// after every instance of the same priority that has a weight. intn(n)
// returns a number in [0, n).
func order(instances []Instance, intn func(int) int) []Instance {
	rest := slices.Clone(instances)
	slices.SortStableFunc(rest, func(a, b Instance) int {
		if c := cmp.Compare(a.Priority, b.Priority); c != 0 {
			return c
		}
		// Weight 0 first, as RFC 2782 asks for the running sum.
		return cmp.Compare(a.Weight, b.Weight)
	})
	out := make([]Instance, 0, len(rest))
	for len(rest) > 0 {
		// The group of the lowest priority left.
		n := 1
		for n < len(rest) && rest[n].Priority == rest[0].Priority {
			n++
		}
		group := rest[:n]
		for len(group) > 0 {
			i := pickWeighted(group, intn)
			out = append(out, group[i])
			group = slices.Delete(group, i, i+1)
		}
		rest = rest[n:]
	}
	return out
}

// pickWeighted returns the index of the instance picked from group, all of
// one priority: a random number in [1, sum of weights] selects the first
// instance whose running sum of weights reaches it; with all weights 0 the
// pick is uniform.
func pickWeighted(group []Instance, intn func(int) int) int {
	total := 0
	for _, in := range group {
		total += int(in.Weight)
	}
	if total == 0 {
		return intn(len(group))
	}
	r := intn(total) + 1
	sum := 0
	for i, in := range group {
		sum += int(in.Weight)
		if sum >= r {
			return i
		}
	}
	return len(group) - 1
}
