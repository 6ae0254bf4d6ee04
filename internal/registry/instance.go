// Package registry holds signpost's model of services and their instances,
// the Store interface that durable backends implement, and the in-memory
// Index that answers every read. It knows nothing of DNS, HTTP, Docker or AWS.
package registry

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Protocols an instance may speak.
const (
	TCP = "tcp"
	UDP = "udp"
)

// Health states of an instance.
const (
	// HealthPassing: the last check passed, or the instance has no check.
	HealthPassing = "passing"
	// HealthCritical: the check failed often enough to take it out of DNS.
	HealthCritical = "critical"
	// HealthPending: the instance has a check that has not passed yet; it
	// is not served until it does.
	HealthPending = "pending"
)

// Limits on what one instance may carry. They keep a single registration
// from bloating every answer and every watch event.
const (
	MaxLabel      = 63
	MaxIDLen      = 63
	MaxNodeLen    = 253
	MaxTags       = 32
	MaxTagLen     = 255
	MaxMetaKeys   = 64
	MaxMetaKeyLen = 63
	MaxMetaValLen = 255
	MaxMetaBytes  = 4096
	MaxOutputLen  = 1024
	// MaxServiceLen keeps the DNS-SD label "_<service>" within 63 bytes.
	MaxServiceLen = MaxLabel - 1
	// MaxTXTString is the longest character string a TXT record carries:
	// each meta "key=value", and "tags=a,b,...", must fit in one.
	MaxTXTString = 255
	// MaxTagLabel is the longest tag that gets DNS names: the label
	// "_<tag>" of _<tag>._sub._<service>._<proto> stays within 63 bytes.
	MaxTagLabel = MaxLabel - 1
)

// Health is the state of an instance's health check as its agent last saw it.
type Health struct {
	Status    string    `json:"status"`
	CheckedAt time.Time `json:"checked_at,omitzero"`
	Output    string    `json:"output,omitempty"`
}

// Instance is one reachable endpoint of a service.
type Instance struct {
	// ID is unique in the registry and is a DNS label: the instance's SRV
	// target is ID.service.zone.
	ID       string            `json:"id"`
	Service  string            `json:"service"`
	Protocol string            `json:"protocol"`
	Address  netip.Addr        `json:"address"`
	Port     uint16            `json:"port"`
	Weight   uint16            `json:"weight"`
	Priority uint16            `json:"priority"`
	Tags     []string          `json:"tags,omitempty"`
	Meta     map[string]string `json:"meta,omitempty"`
	// Node is the agent that owns the instance; the instance lives as long
	// as the node's lease. Empty for instances registered by hand.
	Node         string    `json:"node,omitempty"`
	Health       Health    `json:"health"`
	RegisteredAt time.Time `json:"registered_at,omitzero"`
	// Container names the container the instance belongs to, as its
	// agent saw it; shown to people (CLI, UI), never published in DNS.
	Container string `json:"container,omitempty"`
}

// FieldError says which field of a registration is wrong and why.
type FieldError struct {
	Field  string
	Value  string
	Reason string
}

// Error names the field, the value refused and why.
func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// ParseServiceName accepts the forms a service is named by: "calc",
// "_calc._tcp" and "_calc._udp". It returns the bare service name and the
// protocol the name implies ("" when the name does not say).
func ParseServiceName(given string) (name, proto string, err error) {
	s := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(given)), ".")
	if strings.HasPrefix(s, "_") {
		svc, p, ok := strings.Cut(s, ".")
		if !ok || (p != "_tcp" && p != "_udp") {
			return "", "", &FieldError{"service", given, `want "name", "_name._tcp" or "_name._udp"`}
		}
		s, proto = svc[1:], p[1:]
	}
	if err := CheckLabel(s); err != nil {
		return "", "", &FieldError{"service", given, err.Error()}
	}
	if len(s) > MaxServiceLen {
		return "", "", &FieldError{"service", given, fmt.Sprintf("longer than %d characters: the DNS-SD label _%s would exceed %d bytes", MaxServiceLen, s, MaxLabel)}
	}
	return s, proto, nil
}

// CheckLabel reports whether s is a lower-case DNS label of letters, digits
// and hyphens that neither starts nor ends with a hyphen (RFC 1123).
func CheckLabel(s string) error {
	if s == "" {
		return fmt.Errorf("empty")
	}
	if len(s) > MaxLabel {
		return fmt.Errorf("longer than %d characters", MaxLabel)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(s)-1 {
				return fmt.Errorf("starts or ends with a hyphen")
			}
		default:
			return fmt.Errorf("character %q is not a lower-case letter, digit or hyphen", c)
		}
	}
	return nil
}

// Normalize fills defaults (protocol tcp, weight 1, health passing) and puts
// names in canonical form. Validate should be called afterwards.
func (in *Instance) Normalize() {
	in.ID = strings.ToLower(strings.TrimSpace(in.ID))
	in.Protocol = strings.ToLower(strings.TrimSpace(in.Protocol))
	if name, proto, err := ParseServiceName(in.Service); err == nil {
		// A name that says one protocol while the field says another is
		// left as it is, for Validate to refuse.
		if proto == "" || in.Protocol == "" || in.Protocol == proto {
			in.Service = name
			if in.Protocol == "" {
				in.Protocol = proto
			}
		}
	}
	if in.Protocol == "" {
		in.Protocol = TCP
	}
	if in.Weight == 0 {
		in.Weight = 1
	}
	if in.Health.Status == "" {
		in.Health.Status = HealthPassing
	}
	in.Address = in.Address.Unmap()
	if len(in.Tags) == 0 {
		in.Tags = nil
	}
	if len(in.Meta) == 0 {
		in.Meta = nil
	}
}

// Validate checks every field and returns a *FieldError naming the first
// that is wrong.
func (in *Instance) Validate() error {
	if err := CheckLabel(in.ID); err != nil {
		return &FieldError{"id", in.ID, err.Error()}
	}
	name, proto, err := ParseServiceName(in.Service)
	if err != nil {
		return err
	}
	if in.Protocol != TCP && in.Protocol != UDP {
		return &FieldError{"protocol", in.Protocol, `want "tcp" or "udp"`}
	}
	if proto != "" && proto != in.Protocol {
		return &FieldError{"protocol", in.Protocol, "service name " + in.Service + " says " + proto}
	}
	if name != in.Service {
		return &FieldError{"service", in.Service, "not in canonical form; call Normalize"}
	}
	if !in.Address.IsValid() {
		return &FieldError{"address", in.Address.String(), "not an IPv4 or IPv6 address"}
	}
	if in.Address.IsUnspecified() || in.Address.IsMulticast() || in.Address == broadcast {
		return &FieldError{"address", in.Address.String(), "unspecified, broadcast or multicast address cannot be reached"}
	}
	if in.Address.Zone() != "" {
		return &FieldError{"address", in.Address.String(), "zoned IPv6 addresses cannot be published in DNS"}
	}
	if in.Port == 0 {
		return &FieldError{"port", "0", "want 1-65535"}
	}
	if in.Node != "" {
		if err := CheckNode(in.Node); err != nil {
			return err
		}
	}
	if len(in.Container) > MaxNodeLen {
		return &FieldError{"container", in.Container, fmt.Sprintf("longer than %d characters", MaxNodeLen)}
	}
	if err := checkName(in.Container); err != nil {
		return &FieldError{"container", in.Container, err.Error()}
	}
	if len(in.Tags) > MaxTags {
		return &FieldError{"tags", strings.Join(in.Tags, ","), fmt.Sprintf("more than %d tags", MaxTags)}
	}
	for _, t := range in.Tags {
		if t == "" || len(t) > MaxTagLen {
			return &FieldError{"tags", t, fmt.Sprintf("tag must be 1-%d characters", MaxTagLen)}
		}
		if err := checkPrintable(t); err != nil {
			return &FieldError{"tags", t, err.Error()}
		}
	}
	if n := tagsTXTLen(in.Tags); n > MaxTXTString {
		return &FieldError{"tags", clip(strings.Join(in.Tags, ",")), fmt.Sprintf("published in TXT as \"tags=%s\", %d bytes: a TXT string holds %d", clip(strings.Join(in.Tags, ",")), n, MaxTXTString)}
	}
	if err := checkMeta(in.Meta); err != nil {
		return err
	}
	switch in.Health.Status {
	case HealthPassing, HealthCritical, HealthPending:
	default:
		return &FieldError{"health.status", in.Health.Status, `want "passing", "critical" or "pending"`}
	}
	if len(in.Health.Output) > MaxOutputLen {
		return &FieldError{"health.output", clip(in.Health.Output), fmt.Sprintf("longer than %d bytes", MaxOutputLen)}
	}
	if err := checkPrintable(in.Health.Output); err != nil {
		return &FieldError{"health.output", clip(in.Health.Output), err.Error()}
	}
	return nil
}

// broadcast is the limited broadcast address, never one host's.
var broadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// CheckNode reports whether node is a usable node name: 1 to MaxNodeLen
// bytes of printable text.
func CheckNode(node string) error {
	if node == "" {
		return &FieldError{"node", "", "empty"}
	}
	if len(node) > MaxNodeLen {
		return &FieldError{"node", clip(node), fmt.Sprintf("longer than %d characters", MaxNodeLen)}
	}
	if err := checkName(node); err != nil {
		return &FieldError{"node", clip(node), err.Error()}
	}
	return nil
}

// TagLabel returns the DNS label a tag is published under
// (<tag>.tag.<service>.Z, _<tag>._<service>._<proto>.Z and the DNS-SD
// subtype _<tag>._sub._<service>._<proto>.Z): the tag in lower case, when
// it is a label of letters, digits and hyphens that neither starts nor
// ends with a hyphen, of at most MaxTagLabel bytes. Other tags get no
// names: they are published in TXT only.
func TagLabel(tag string) (string, bool) {
	if len(tag) == 0 || len(tag) > MaxTagLabel {
		return "", false
	}
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z':
		case c == '-' && i > 0 && i < len(tag)-1:
		default:
			return "", false
		}
	}
	return strings.ToLower(tag), true
}

// tagsTXTLen is the length of the TXT string "tags=a,b" that carries tags.
func tagsTXTLen(tags []string) int {
	if len(tags) == 0 {
		return 0
	}
	n := len("tags=") + len(tags) - 1
	for _, t := range tags {
		n += len(t)
	}
	return n
}

// clip shortens a long value for an error message.
func clip(s string) string {
	if len(s) <= 40 {
		return s
	}
	cut := 37
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}

// CheckMeta checks metadata as Validate does (key count, key and value
// lengths, each "key=value" within one TXT string, the total, printable
// text) and returns a *FieldError naming the first entry that is wrong.
// Agents use it to decide whether one more key fits before they add it.
func CheckMeta(meta map[string]string) error { return checkMeta(meta) }

func checkMeta(meta map[string]string) error {
	if len(meta) > MaxMetaKeys {
		return &FieldError{"meta", fmt.Sprintf("%d keys", len(meta)), fmt.Sprintf("more than %d keys", MaxMetaKeys)}
	}
	total := 0
	for k, v := range meta {
		if k == "" || len(k) > MaxMetaKeyLen {
			return &FieldError{"meta key", k, fmt.Sprintf("must be 1-%d characters", MaxMetaKeyLen)}
		}
		if strings.ContainsAny(k, "= ") {
			return &FieldError{"meta key", k, `must not contain "=" or spaces`}
		}
		if err := checkPrintable(k); err != nil {
			return &FieldError{"meta key", k, err.Error()}
		}
		if len(v) > MaxMetaValLen {
			return &FieldError{"meta." + k, clip(v), fmt.Sprintf("longer than %d bytes", MaxMetaValLen)}
		}
		if err := checkPrintable(v); err != nil {
			return &FieldError{"meta." + k, clip(v), err.Error()}
		}
		if n := len(k) + 1 + len(v); n > MaxTXTString {
			return &FieldError{"meta." + k, clip(v), fmt.Sprintf("published in TXT as \"%s=...\", %d bytes: a TXT string holds %d", k, n, MaxTXTString)}
		}
		total += len(k) + len(v) + 2
	}
	if total > MaxMetaBytes {
		return &FieldError{"meta", fmt.Sprintf("%d bytes", total), fmt.Sprintf("more than %d bytes in all", MaxMetaBytes)}
	}
	return nil
}

// checkName checks a node or container name, which people read in logs,
// the CLI and the UI: no control characters, and no invisible formatting
// ones (bidirectional overrides, zero-width spaces) that would make one
// name look like another.
func checkName(s string) error {
	if err := checkPrintable(s); err != nil {
		return err
	}
	for _, r := range s {
		if unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("contains formatting character %U", r)
		}
	}
	return nil
}

// checkPrintable refuses text a terminal or a DNS client could
// misread: invalid UTF-8, control characters (C0, DEL and C1),
// bidirectional controls (U+202E and its kin reorder what a terminal
// shows, as in "Trojan Source") and line and paragraph separators.
func checkPrintable(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("contains control character %U", r)
		}
		if unicode.In(r, unicode.Bidi_Control, unicode.Zl, unicode.Zp) {
			return fmt.Errorf("contains %U, a bidirectional control or line separator", r)
		}
	}
	return nil
}

// Serving reports whether the instance's health lets DNS hand it out.
func (in *Instance) Serving() bool { return in.Health.Status == HealthPassing }

// Clone returns a deep copy.
func (in Instance) Clone() Instance {
	if in.Tags != nil {
		in.Tags = append([]string(nil), in.Tags...)
	}
	if in.Meta != nil {
		m := make(map[string]string, len(in.Meta))
		for k, v := range in.Meta {
			m[k] = v
		}
		in.Meta = m
	}
	return in
}

// SameRegistration reports whether a and b publish the same thing, ignoring
// when they were registered and when health was last checked.
func SameRegistration(a, b *Instance) bool {
	if a.ID != b.ID || a.Service != b.Service || a.Protocol != b.Protocol ||
		a.Address != b.Address || a.Port != b.Port || a.Weight != b.Weight ||
		a.Priority != b.Priority || a.Node != b.Node || a.Container != b.Container ||
		a.Health.Status != b.Health.Status || a.Health.Output != b.Health.Output ||
		len(a.Tags) != len(b.Tags) || len(a.Meta) != len(b.Meta) {
		return false
	}
	for i := range a.Tags {
		if a.Tags[i] != b.Tags[i] {
			return false
		}
	}
	for k, v := range a.Meta {
		if bv, ok := b.Meta[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// SortInstances orders instances by service, then ID, for stable output.
func SortInstances(list []Instance) {
	sort.Slice(list, func(i, j int) bool {
		if list[i].Service != list[j].Service {
			return list[i].Service < list[j].Service
		}
		return list[i].ID < list[j].ID
	})
}

// MetaZone is the metadata key that says which zone (an availability
// zone, a rack: a locality label) an instance's node is in. Agents set it
// from their --node-zone; the DNS server's locality answers read it.
const MetaZone = "zone"

// CheckZone reports whether label can be a zone: a lower-case DNS label
// (letters, digits, hyphens; "us-east-1a") that fits the metadata limits
// as the value of MetaZone.
func CheckZone(label string) error {
	if err := CheckLabel(label); err != nil {
		return &FieldError{"zone", clip(label), err.Error()}
	}
	return checkMeta(map[string]string{MetaZone: label})
}
