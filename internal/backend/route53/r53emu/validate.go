package r53emu

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

func knownType(t string) bool {
	switch t {
	case "A", "AAAA", "CAA", "CNAME", "DS", "HTTPS", "MX", "NAPTR", "NS", "PTR", "SOA", "SPF", "SRV", "SSHFP", "SVCB", "TLSA", "TXT":
		return true
	}
	return false
}

// modeledType reports whether the emulator validates values of type t and
// so accepts changes to it.
func modeledType(t string) bool {
	switch t {
	case "A", "AAAA", "CNAME", "SRV", "TXT":
		return true
	}
	return false
}

func describe(name, typ string, setID *string) string {
	if setID != nil {
		return fmt.Sprintf("[name='%s', type='%s', set-identifier='%s']", name, typ, *setID)
	}
	return fmt.Sprintf("[name='%s', type='%s']", name, typ)
}

// applyBatch validates a change batch against zone z and applies it whole,
// or not at all. It returns the batch's record count as AWS counts it.
func applyBatch(z *zone, b xmlChangeBatch) (int, *apiError) {
	if b.Comment != nil && len(*b.Comment) > 256 {
		return 0, errorf(CodeInvalidInput, "1 validation error detected: Value at 'changeBatch.comment' failed to satisfy constraint: Member must have length less than or equal to 256")
	}
	if len(b.Changes) == 0 {
		return 0, errorf(CodeInvalidInput, "1 validation error detected: Value '[]' at 'changeBatch.changes' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	// Limits first, as AWS counts them: every ResourceRecord element and
	// every character of every Value, twice for an UPSERT.
	records, chars := 0, 0
	for _, c := range b.Changes {
		k := 1
		if c.Action == "UPSERT" {
			k = 2
		}
		if c.ResourceRecordSet.ResourceRecords != nil {
			for _, v := range c.ResourceRecordSet.ResourceRecords.Records {
				records += k
				chars += k * len(v.Value)
			}
		}
	}
	if records > MaxRecordsPerRequest {
		return records, &apiError{status: 400, code: CodeInvalidChangeBatch, message: "limit",
			messages: []string{fmt.Sprintf("Number of records limit of %d exceeded (the request has %d, UPSERT counted twice).", MaxRecordsPerRequest, records)}}
	}
	if chars > MaxValueCharsPerRequest {
		return records, &apiError{status: 400, code: CodeInvalidChangeBatch, message: "limit",
			messages: []string{fmt.Sprintf("Number of characters limit of %d exceeded (the request has %d, UPSERT counted twice).", MaxValueCharsPerRequest, chars)}}
	}
	// Shape of each change: InvalidInput, as AWS's request validation.
	for _, c := range b.Changes {
		if aerr := checkShape(c); aerr != nil {
			return records, aerr
		}
	}
	// Semantics, applied in order to a copy: InvalidChangeBatch naming
	// every change that fails; nothing is applied unless all pass.
	staged := make(map[string]*RecordSet, len(z.records))
	for k, v := range z.records {
		staged[k] = v
	}
	var msgs []string
	for _, c := range b.Changes {
		if m := applyOne(z, staged, c); m != "" {
			msgs = append(msgs, m)
		}
	}
	if len(msgs) > 0 {
		return records, &apiError{status: 400, code: CodeInvalidChangeBatch, message: strings.Join(msgs, "; "), messages: msgs}
	}
	z.records = staged
	return records, nil
}

func checkShape(c xmlChange) *apiError {
	rs := c.ResourceRecordSet
	ctx := fmt.Sprintf("Change with [Action=%s, Name=%s, Type=%s, SetIdentifier=%s]", c.Action, rs.Name, rs.Type, ptrOr(rs.SetIdentifier))
	switch c.Action {
	case "CREATE", "DELETE", "UPSERT":
	default:
		return errorf(CodeInvalidInput, "Invalid request: Action %q is not CREATE, DELETE or UPSERT in %s", c.Action, ctx)
	}
	if rs.Name == "" {
		return errorf(CodeInvalidInput, "Invalid request: Missing field 'Name' in %s", ctx)
	}
	if !knownType(rs.Type) {
		return errorf(CodeInvalidInput, "Invalid request: unknown Type %q in %s", rs.Type, ctx)
	}
	if len(rs.Unmodeled) > 0 {
		return errorf(CodeInvalidInput, "r53emu: %s is not modeled by this emulator (it is not AWS) in %s", rs.Unmodeled[0].XMLName.Local, ctx)
	}
	if !modeledType(rs.Type) {
		return errorf(CodeInvalidInput, "r53emu: changes to type %s are not modeled by this emulator (it is not AWS) in %s", rs.Type, ctx)
	}
	if rs.SetIdentifier != nil && rs.Weight == nil {
		return errorf(CodeInvalidInput, "Invalid request: Expected exactly one of [Weight, Region, Failover, GeoLocation, MultiValueAnswer, GeoProximityLocation, or CidrRoutingConfig], but found none in %s", ctx)
	}
	if rs.Weight != nil && rs.SetIdentifier == nil {
		return errorf(CodeInvalidInput, "Invalid request: Missing field 'SetIdentifier' in %s", ctx)
	}
	if rs.SetIdentifier != nil && (len(*rs.SetIdentifier) < 1 || len(*rs.SetIdentifier) > MaxSetIdentifier) {
		return errorf(CodeInvalidInput, "1 validation error detected: Value '%s' at 'changeBatch.changes.member.resourceRecordSet.setIdentifier' failed to satisfy constraint: Member must have length between 1 and %d", *rs.SetIdentifier, MaxSetIdentifier)
	}
	if rs.Weight != nil && (*rs.Weight < 0 || *rs.Weight > MaxWeight) {
		return errorf(CodeInvalidInput, "1 validation error detected: Value '%d' at 'changeBatch.changes.member.resourceRecordSet.weight' failed to satisfy constraint: Member must have value between 0 and %d", *rs.Weight, MaxWeight)
	}
	if rs.TTL == nil || rs.ResourceRecords == nil || len(rs.ResourceRecords.Records) == 0 {
		return errorf(CodeInvalidInput, "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and ResourceRecords], or TrafficPolicyInstanceId], but found none in %s", ctx)
	}
	if *rs.TTL < 0 || *rs.TTL > 2147483647 {
		return errorf(CodeInvalidInput, "1 validation error detected: Value '%d' at 'changeBatch.changes.member.resourceRecordSet.tTL' failed to satisfy constraint: Member must have value between 0 and 2147483647", *rs.TTL)
	}
	return nil
}

func ptrOr(p *string) string {
	if p == nil {
		return "null"
	}
	return *p
}

// applyOne applies one change to staged and returns what is wrong with it,
// or "".
func applyOne(z *zone, staged map[string]*RecordSet, c xmlChange) string {
	rs := c.ResourceRecordSet
	name := canonical(rs.Name)
	desc := describe(name, rs.Type, rs.SetIdentifier)
	if name != z.Name && !strings.HasSuffix(name, "."+z.Name) {
		return fmt.Sprintf("RRSet with DNS name %s is not permitted in zone %s", name, z.Name)
	}
	if err := checkName(name); err != "" {
		return fmt.Sprintf("Invalid DNS name %s: %s", name, err)
	}
	var values []string
	for _, v := range rs.ResourceRecords.Records {
		if msg := checkValue(rs.Type, v.Value); msg != "" {
			return fmt.Sprintf("Invalid Resource Record: 'FATAL problem: %s encountered with '%s''", msg, v.Value)
		}
		if slices.Contains(values, v.Value) {
			return fmt.Sprintf("Duplicate Resource Record: '%s'", v.Value)
		}
		values = append(values, v.Value)
	}
	if rs.Type == "CNAME" && len(values) > 1 {
		return fmt.Sprintf("RRSet of type CNAME with DNS name %s has more than one value", name)
	}
	setID := ""
	if rs.SetIdentifier != nil {
		setID = *rs.SetIdentifier
	}
	k := key(name, rs.Type, setID)
	cur := staged[k]
	want := &RecordSet{Name: name, Type: rs.Type, SetIdentifier: setID, TTL: *rs.TTL, Values: values}
	if rs.Weight != nil {
		w := *rs.Weight
		want.Weight = &w
	}
	switch c.Action {
	case "DELETE":
		if cur == nil {
			return fmt.Sprintf("Tried to delete resource record set %s but it was not found", desc)
		}
		if !sameSet(cur, want) {
			return fmt.Sprintf("Tried to delete resource record set %s but the values provided do not match the current values", desc)
		}
		delete(staged, k)
		return ""
	case "CREATE":
		if cur != nil {
			return fmt.Sprintf("Tried to create resource record set %s but it already exists", desc)
		}
	}
	// CREATE or UPSERT: the routing policy must agree with the sets of the
	// same name and type, and a CNAME stands alone.
	for _, o := range staged {
		if o.Name != name || o == cur {
			continue
		}
		if o.Type == rs.Type {
			if setID == "" && o.SetIdentifier != "" {
				return fmt.Sprintf("RRSet with DNS name %s, type %s cannot be created as weighted sets exist with the same name and type.", name, rs.Type)
			}
			if setID != "" && o.SetIdentifier == "" {
				return fmt.Sprintf("RRSet with DNS name %s, type %s, SetIdentifier %s cannot be created as a non-weighted set exists with the same name and type.", name, rs.Type, setID)
			}
		}
		if (rs.Type == "CNAME") != (o.Type == "CNAME") {
			return fmt.Sprintf("RRSet of type %s with DNS name %s is not permitted because a conflicting RRSet of type %s with the same DNS name already exists in zone %s", rs.Type, name, o.Type, z.Name)
		}
	}
	staged[k] = want
	return ""
}

func sameSet(a, b *RecordSet) bool {
	if a.TTL != b.TTL || (a.Weight == nil) != (b.Weight == nil) || (a.Weight != nil && *a.Weight != *b.Weight) {
		return false
	}
	x, y := slices.Clone(a.Values), slices.Clone(b.Values)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func checkName(name string) string {
	if len(name) > 255 {
		return "longer than 255 characters"
	}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l == "" {
			return "empty label"
		}
		if len(l) > 63 {
			return "label longer than 63 characters"
		}
	}
	return ""
}

// checkValue validates one value of a record of type t and returns what is
// wrong with it, or "".
func checkValue(t, v string) string {
	switch t {
	case "A":
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return "ARRDATAIllegalIPv4Address (Value is not a valid IPv4 address)"
		}
	case "AAAA":
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is6() || a.Is4In6() {
			return "AAAARRDATAIllegalIPv6Address (Value is not a valid IPv6 address)"
		}
	case "SRV":
		f := strings.Fields(v)
		if len(f) != 4 || strings.Join(f, " ") != v {
			return "SRVRRDATANotFourFields (Value must be four fields separated by single spaces)"
		}
		for i, what := range []string{"priority", "weight", "port"} {
			n, err := strconv.ParseUint(f[i], 10, 16)
			if err != nil || strconv.FormatUint(n, 10) != f[i] {
				return fmt.Sprintf("SRVRRDATAIllegal%s (%s is not an integer 0-65535)", strings.ToUpper(what[:1])+what[1:], what)
			}
		}
		if msg := checkName(canonical(f[3])); msg != "" || strings.ContainsAny(f[3], " \t") {
			return "SRVRRDATAIllegalTarget (target is not a domain name)"
		}
	case "CNAME":
		if msg := checkName(canonical(v)); msg != "" || strings.ContainsAny(v, " \t") {
			return "DomainLabelEmpty (Value is not a domain name)"
		}
	case "TXT":
		if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return "TXTRDATAMalformed (Value must be in double quotes)"
		}
	}
	return ""
}
