package route53backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/aws-sdk-go-v2/service/route53/types"
	"golang.org/x/time/rate"
)

// Route 53's limits on one ChangeResourceRecordSets request.
const (
	// MaxBatchRecords is the most ResourceRecord elements in one request;
	// an UPSERT counts twice.
	MaxBatchRecords = 1000
	// MaxBatchChars is the most characters of values in one request; an
	// UPSERT counts twice.
	MaxBatchChars = 32000
	// listPage is the page size asked of ListResourceRecordSets (Route 53's
	// most).
	listPage = 300
)

// Zone is one Route 53 hosted zone, reached through a rate-limited,
// retrying client. The agent's Backend writes through it; the checker
// (signpost check --backend route53) uses ListSRV and DeleteRecordSet.
type Zone struct {
	client  *route53.Client
	limiter *rate.Limiter
	id      string // without "/hostedzone/"
	name    string // lower case, with the trailing dot
	log     *slog.Logger
}

// OpenZone resolves the hosted zone cfg names and returns a handle on it.
// Only Zone, ZoneID, AllowPublic and the client settings of cfg are used.
func OpenZone(ctx context.Context, cfg Config) (*Zone, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return openZone(ctx, &cfg)
}

func openZone(ctx context.Context, cfg *Config) (*Zone, error) {
	client, lim, err := newClient(ctx, cfg)
	if err != nil {
		return nil, err
	}
	z := &Zone{client: client, limiter: lim, log: cfg.Log}
	if cfg.ZoneID != "" {
		err = z.byID(ctx, cfg)
	} else {
		err = z.byName(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	z.log = cfg.Log.With("zone", z.name, "zone_id", z.id)
	return z, nil
}

// ID returns the hosted zone's id, without "/hostedzone/".
func (z *Zone) ID() string { return z.id }

// Name returns the zone's name in lower case with a trailing dot.
func (z *Zone) Name() string { return z.name }

func fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

func (z *Zone) byID(ctx context.Context, cfg *Config) error {
	out, err := z.client.GetHostedZone(ctx, &route53.GetHostedZoneInput{Id: aws.String(cfg.ZoneID)})
	if err != nil {
		return fmt.Errorf("route53: get hosted zone %s: %w", cfg.ZoneID, err)
	}
	hz := out.HostedZone
	if hz == nil {
		return fmt.Errorf("route53: get hosted zone %s: empty answer", cfg.ZoneID)
	}
	name := fqdn(aws.ToString(hz.Name))
	if cfg.Zone != "" && name != fqdn(cfg.Zone) {
		return fmt.Errorf("route53: hosted zone %s is %s, not %s", cfg.ZoneID, name, fqdn(cfg.Zone))
	}
	if why := unusable(hz, cfg.AllowPublic); why != "" {
		return fmt.Errorf("route53: hosted zone %s (%s) %s", cfg.ZoneID, name, why)
	}
	z.id, z.name = cfg.ZoneID, name
	return nil
}

// unusable says why the backend must not write to hz, or "".
func unusable(hz *types.HostedZone, allowPublic bool) string {
	if hz.LinkedService != nil {
		return fmt.Sprintf("is owned by %s (a Cloud Map namespace or another service's zone); signpost does not write to it", aws.ToString(hz.LinkedService.ServicePrincipal))
	}
	if (hz.Config == nil || !hz.Config.PrivateZone) && !allowPublic {
		return "is a public zone; only private zones are used unless public ones are allowed (--allow-public-zone)"
	}
	return ""
}

func zoneID(hz *types.HostedZone) string {
	return strings.TrimPrefix(aws.ToString(hz.Id), "/hostedzone/")
}

func (z *Zone) byName(ctx context.Context, cfg *Config) error {
	want := fqdn(cfg.Zone)
	in := &route53.ListHostedZonesByNameInput{DNSName: aws.String(want)}
	var usable []types.HostedZone
	var skipped []string
	var seen pageTokens
	for {
		out, err := z.client.ListHostedZonesByName(ctx, in)
		if err != nil {
			return fmt.Errorf("route53: list hosted zones named %s: %w", want, err)
		}
		past := false
		for i := range out.HostedZones {
			hz := &out.HostedZones[i]
			if fqdn(aws.ToString(hz.Name)) != want {
				// Zones come sorted by name: the exact matches are first.
				past = true
				break
			}
			if why := unusable(hz, cfg.AllowPublic); why != "" {
				skipped = append(skipped, zoneID(hz)+" "+why)
				continue
			}
			usable = append(usable, *hz)
		}
		if past || !out.IsTruncated {
			break
		}
		if err := seen.next("NextDNSName", aws.ToString(out.NextDNSName), "NextHostedZoneId", aws.ToString(out.NextHostedZoneId)); err != nil {
			return fmt.Errorf("route53: list hosted zones named %s: %w", want, err)
		}
		in.DNSName, in.HostedZoneId = out.NextDNSName, out.NextHostedZoneId
	}
	switch len(usable) {
	case 1:
		z.id, z.name = zoneID(&usable[0]), want
		if len(skipped) > 0 {
			cfg.Log.Info("route53: other hosted zones of the same name skipped", "zone", want, "using", z.id, "skipped", strings.Join(skipped, "; "))
		}
		return nil
	case 0:
		if len(skipped) > 0 {
			return fmt.Errorf("route53: no usable hosted zone named %s: %s", want, strings.Join(skipped, "; "))
		}
		return fmt.Errorf("route53: no hosted zone named %s (names must match exactly)", want)
	}
	ids := make([]string, len(usable))
	for i := range usable {
		kind := "private"
		if usable[i].Config == nil || !usable[i].Config.PrivateZone {
			kind = "public"
		}
		ids[i] = zoneID(&usable[i]) + " (" + kind + ")"
	}
	return fmt.Errorf("route53: %d hosted zones are named %s: %s; choose one with --zone-id", len(usable), want, strings.Join(ids, ", "))
}

// list calls fn with every record set of the zone, page by page.
func (z *Zone) list(ctx context.Context, fn func(types.ResourceRecordSet)) error {
	p := route53.NewListResourceRecordSetsPaginator(z.client, &route53.ListResourceRecordSetsInput{
		HostedZoneId: aws.String(z.id),
		MaxItems:     aws.Int32(listPage),
	})
	var seen pageTokens
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("route53: list record sets of zone %s (%s): %w", z.name, z.id, err)
		}
		if out.IsTruncated {
			if aws.ToString(out.NextRecordName) == "" {
				return fmt.Errorf("route53: list record sets of zone %s (%s): a truncated page gave no NextRecordName", z.name, z.id)
			}
			if err := seen.next("NextRecordName", aws.ToString(out.NextRecordName), "NextRecordType", string(out.NextRecordType),
				"NextRecordIdentifier", aws.ToString(out.NextRecordIdentifier)); err != nil {
				return fmt.Errorf("route53: list record sets of zone %s (%s): %w", z.name, z.id, err)
			}
		}
		for _, rs := range out.ResourceRecordSets {
			fn(rs)
		}
	}
	return nil
}

// ErrRepeatedPageToken means a listing returned a page token it had
// returned before: following it would loop for ever.
var ErrRepeatedPageToken = errors.New("repeated page token")

// pageTokens remembers the page tokens of one listing, so that a token
// given twice is an error instead of a loop.
type pageTokens map[string]bool

// next records a page's token (name, value pairs) and fails, naming it,
// if it was seen before.
func (p *pageTokens) next(kv ...string) error {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%q", kv[i], kv[i+1])
	}
	tok := b.String()
	if *p == nil {
		*p = pageTokens{}
	}
	if (*p)[tok] {
		return fmt.Errorf("%w %s after %d pages: the listing would loop", ErrRepeatedPageToken, tok, len(*p)+1)
	}
	(*p)[tok] = true
	return nil
}

// Ping makes one cheap call (GetHostedZone) to see that the zone can be
// reached with the credentials at hand.
func (z *Zone) Ping(ctx context.Context) error {
	if _, err := z.client.GetHostedZone(ctx, &route53.GetHostedZoneInput{Id: aws.String(z.id)}); err != nil {
		return fmt.Errorf("route53: get hosted zone %s (%s): %w", z.id, z.name, err)
	}
	return nil
}

// SRVTarget is one value of an SRV record set.
type SRVTarget struct {
	Priority, Weight, Port uint16
	// Target is the host name, as written in the record.
	Target string
}

// SRVRecordSet is one SRV record set of the zone, as listed.
type SRVRecordSet struct {
	// Name is the record set's name ("_calc._tcp.servicediscovery.internal.").
	Name string
	// SetIdentifier is empty for a non-weighted set.
	SetIdentifier string
	// Host is the host that owns the set by signpost's convention (the
	// SetIdentifier up to its first ":"), or "".
	Host    string
	TTL     int64
	Targets []SRVTarget
	// Malformed holds values that do not parse as SRV data.
	Malformed []string

	raw types.ResourceRecordSet
}

// ListSRV returns every SRV record set in the zone, whoever owns it, with
// its targets.
func (z *Zone) ListSRV(ctx context.Context) ([]SRVRecordSet, error) {
	var out []SRVRecordSet
	err := z.list(ctx, func(rs types.ResourceRecordSet) {
		if rs.Type != types.RRTypeSrv {
			return
		}
		s := SRVRecordSet{Name: fqdn(aws.ToString(rs.Name)), SetIdentifier: aws.ToString(rs.SetIdentifier), TTL: aws.ToInt64(rs.TTL), raw: rs}
		if h, _, ok := strings.Cut(s.SetIdentifier, ":"); ok {
			s.Host = h
		}
		for _, r := range rs.ResourceRecords {
			t, ok := parseSRV(aws.ToString(r.Value))
			if !ok {
				s.Malformed = append(s.Malformed, aws.ToString(r.Value))
				continue
			}
			s.Targets = append(s.Targets, t)
		}
		out = append(out, s)
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].SetIdentifier < out[j].SetIdentifier
	})
	return out, nil
}

func parseSRV(v string) (SRVTarget, bool) {
	f := strings.Fields(v)
	if len(f) != 4 {
		return SRVTarget{}, false
	}
	var n [3]uint16
	for i := range 3 {
		x, err := strconv.ParseUint(f[i], 10, 16)
		if err != nil {
			return SRVTarget{}, false
		}
		n[i] = uint16(x)
	}
	return SRVTarget{Priority: n[0], Weight: n[1], Port: n[2], Target: f[3]}, true
}

// ErrRecordChanged means a record set was changed after it was listed, so
// it was not deleted.
var ErrRecordChanged = errors.New("record set changed since it was listed")

// DeleteRecordSet deletes one record set exactly as ListSRV returned it.
// One that is already gone is not an error; one that changed since gives
// ErrRecordChanged (wrapped), and is left alone.
func (z *Zone) DeleteRecordSet(ctx context.Context, s SRVRecordSet) error {
	if s.raw.Name == nil {
		return fmt.Errorf("route53: delete SRV %s [%s]: not a record set listed by ListSRV", s.Name, s.SetIdentifier)
	}
	rs := s.raw
	err := z.write(ctx, []types.Change{{Action: types.ChangeActionDelete, ResourceRecordSet: &rs}}, "signpost check: delete failing endpoint")
	var icb *types.InvalidChangeBatch
	switch {
	case err == nil:
		return nil
	case errors.As(err, &icb) && allContain(icb.Messages, "not found"):
		return nil
	case errors.As(err, &icb) && allContain(icb.Messages, "do not match"):
		return fmt.Errorf("route53: delete SRV %s [%s] in zone %s: %w", s.Name, s.SetIdentifier, z.name, ErrRecordChanged)
	}
	return fmt.Errorf("route53: delete SRV %s [%s] in zone %s: %w", s.Name, s.SetIdentifier, z.name, err)
}

func allContain(msgs []string, sub string) bool {
	for _, m := range msgs {
		if !strings.Contains(m, sub) {
			return false
		}
	}
	return len(msgs) > 0
}

// write sends one batch (it must be within the limits).
func (z *Zone) write(ctx context.Context, changes []types.Change, comment string) error {
	_, err := z.client.ChangeResourceRecordSets(ctx, &route53.ChangeResourceRecordSetsInput{
		HostedZoneId: aws.String(z.id),
		ChangeBatch:  &types.ChangeBatch{Changes: changes, Comment: aws.String(comment)},
	})
	return err
}

// cost returns what one change counts against a request's limits.
func cost(c types.Change) (records, chars int) {
	k := 1
	if c.Action == types.ChangeActionUpsert {
		k = 2
	}
	for _, r := range c.ResourceRecordSet.ResourceRecords {
		records += k
		chars += k * len(aws.ToString(r.Value))
	}
	return records, chars
}

// batches splits changes into requests within Route 53's limits, keeping
// their order.
func batches(changes []types.Change) [][]types.Change {
	var out [][]types.Change
	var cur []types.Change
	recs, chars := 0, 0
	for _, c := range changes {
		r, ch := cost(c)
		if len(cur) > 0 && (recs+r > MaxBatchRecords || chars+ch > MaxBatchChars) {
			out = append(out, cur)
			cur, recs, chars = nil, 0, 0
		}
		cur = append(cur, c)
		recs += r
		chars += ch
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}
