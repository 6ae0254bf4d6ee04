package awstest

// The least-privilege test: the template's agent and sweep roles grant
// exactly the Route 53 operations signpost's code calls, no more, no less.
//
// Two views of "what the code calls", each checked against the other:
//
//   - static: every Route 53 operation named anywhere in the repository's
//     non-test Go code (a method of route53.Client called, or a paginator
//     or waiter built), found by reading the source. A new call anywhere
//     shows here, whether or not a test exercises it.
//   - recorded: the operations the Route 53 emulator (r53emu) receives
//     while the agent's backend and the sweep run with the template's
//     flags (the zone named by --zone-id), one role at a time.
//
// The policy must equal the recorded set of its role; and every static
// operation must be recorded for some role, or be listed in notUnderTemplate
// with the reason the template's flags never reach it.

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/route53"

	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/backend/route53/r53emu"
	"github.com/signpost-dns/signpost/internal/check"
	"github.com/signpost-dns/signpost/internal/registry"
)

const route53Import = "github.com/aws/aws-sdk-go-v2/service/route53"

// notUnderTemplate lists the operations the code can call that the
// template's roles need not grant, each with why.
var notUnderTemplate = map[string]string{
	"ListHostedZonesByName": "finds the zone by name; the template passes --zone-id, so the zone is read with GetHostedZone instead",
}

// waiterOps maps the SDK's waiters to the operation they poll.
var waiterOps = map[string]string{
	"ResourceRecordSetsChanged": "GetChange",
}

// clientOps is every operation of the Route 53 client: its methods but
// Options.
func clientOps() map[string]bool {
	ops := map[string]bool{}
	tp := reflect.TypeOf(&route53.Client{})
	for i := 0; i < tp.NumMethod(); i++ {
		if m := tp.Method(i).Name; m != "Options" {
			ops[m] = true
		}
	}
	return ops
}

var paginatorOrWaiter = regexp.MustCompile(`^New(\w+)(Paginator|Waiter)$`)

// staticOps reads every non-test Go file under root that imports the
// Route 53 SDK and returns the operations it names, with where.
func staticOps(t *testing.T, root string) map[string][]string {
	t.Helper()
	ops := clientOps()
	found := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == ".git" || n == "testdata" || n == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkgName := ""
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == route53Import {
				pkgName = "route53"
				if imp.Name != nil {
					pkgName = imp.Name.Name
				}
			}
		}
		if pkgName == "" {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			name := sel.Sel.Name
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == pkgName {
				m := paginatorOrWaiter.FindStringSubmatch(name)
				if m == nil {
					return true
				}
				op := m[1]
				if m[2] == "Waiter" {
					if op = waiterOps[m[1]]; op == "" {
						t.Errorf("%s: waiter %s: add the operation it polls to waiterOps", rel, name)
						return true
					}
				}
				found[op] = append(found[op], fset.Position(sel.Pos()).String())
				return true
			}
			if ops[name] {
				found[name] = append(found[name], fset.Position(sel.Pos()).String())
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) == 0 {
		t.Fatalf("no Route 53 call found under %s: the scan is broken", root)
	}
	return found
}

var emuCreds = aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "AKIDEMULATOR", SecretAccessKey: "secret", Source: "awstest"}, nil
})

const zoneName = "servicediscovery.internal"

// recorder is an emulator with one private zone.
type recorder struct {
	emu  *r53emu.Server
	zone string
	// changes are the ChangeResourceRecordSets changes received so far.
	changes []r53emu.Change
}

func newRecorder(t *testing.T) *recorder {
	t.Helper()
	emu, err := r53emu.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	return &recorder{emu: emu, zone: emu.AddZone(r53emu.Zone{Name: zoneName, Private: true})}
}

// config is a backend configuration as the template gives it (--zone and
// --zone-id), reaching the emulator.
func (r *recorder) config() route53backend.Config {
	return route53backend.Config{
		Zone: zoneName, ZoneID: r.zone,
		Endpoint: r.emu.URL(), Region: "us-east-1", Credentials: emuCreds,
		Rate: 1000, Burst: 10, Window: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Log: slog.New(slog.DiscardHandler),
	}
}

// ops returns the operations the emulator received, and resets its log;
// the record changes sent go to r.changes.
func (r *recorder) ops(t *testing.T) map[string]bool {
	t.Helper()
	got := map[string]bool{}
	for _, q := range r.emu.Requests() {
		if q.Code != "" {
			t.Errorf("%s answered %s: the recording run should make no failing call", q.Op, q.Code)
		}
		got[q.Op] = true
		r.changes = append(r.changes, q.Changes...)
	}
	r.emu.ResetRequests()
	return got
}

// recordAgent runs every entry point of the agent's backend, then a
// host with an IPv6 address (whose host record is an AAAA). It returns
// the operations called and the record changes sent.
func recordAgent(t *testing.T) (map[string]bool, []r53emu.Change) {
	t.Helper()
	r := newRecorder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const host = "ip-10-0-0-5.ec2.internal"
	one := int64(1)
	// A record this host left behind: the start-up sync deletes it.
	if err := r.emu.Seed(r.zone, r53emu.RecordSet{Name: "_old._tcp." + zoneName, Type: "SRV", SetIdentifier: host + ":gone",
		Weight: &one, Values: []string{"1 1 31000 " + host}}); err != nil {
		t.Fatal(err)
	}
	cfg := r.config()
	cfg.Hostname, cfg.HostAddress = host, netip.MustParseAddr("10.0.0.5")
	b, err := route53backend.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := func(id, svc string, port uint16) registry.Instance {
		i := registry.Instance{ID: id, Service: svc, Protocol: "tcp", Address: netip.MustParseAddr("10.0.0.5"), Port: port, Node: host,
			Meta: map[string]string{route53backend.MetaContainerID: id}}
		i.Normalize()
		return i
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"Sync", func() error { return b.Sync(ctx, []registry.Instance{in("c1", "calc", 32768)}) }},
		{"Register", func() error { return b.Register(ctx, in("c2", "time", 32769)) }},
		{"Flush", func() error { return b.Flush(ctx) }},
		{"Deregister", func() error { return b.Deregister(ctx, in("c2", "time", 32769)) }},
		{"Heartbeat", func() error { return b.Heartbeat(ctx) }},
		{"Release", func() error { return b.Release(ctx) }},
		{"Close", func() error { return b.Close(ctx) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("agent backend %s: %v", s.name, err)
		}
	}
	if n := len(r.emu.Records(r.zone)); n != 2 {
		t.Fatalf("after Release the zone holds %d record sets, want SOA and NS only: the run did not do what it should", n)
	}
	const host6 = "ip-fd00-5.ec2.internal"
	cfg.Hostname, cfg.HostAddress = host6, netip.MustParseAddr("fd00::5")
	b6, err := route53backend.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c6 := in("c6", "calc", 32770)
	c6.Node, c6.Address = host6, cfg.HostAddress
	for _, err := range []error{b6.Sync(ctx, []registry.Instance{c6}), b6.Release(ctx), b6.Close(ctx)} {
		if err != nil {
			t.Fatalf("agent backend on an IPv6 host: %v", err)
		}
	}
	ops := r.ops(t)
	return ops, r.changes
}

// recordSweep runs one sweep of `signpost check --backend route53` that
// removes a dead endpoint; it returns the operations called and the
// record changes sent.
func recordSweep(t *testing.T) (map[string]bool, []r53emu.Change) {
	t.Helper()
	r := newRecorder(t)
	one := int64(1)
	if err := r.emu.Seed(r.zone, r53emu.RecordSet{Name: "_calc._tcp." + zoneName, Type: "SRV", SetIdentifier: "gone-host:c1",
		Weight: &one, Values: []string{"1 1 31000 gone-host." + zoneName}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	zone, err := route53backend.OpenZone(ctx, r.config())
	if err != nil {
		t.Fatal(err)
	}
	src := &check.Route53Source{Zone: zone, Resolve: func(_ context.Context, host string) (netip.Addr, error) {
		return netip.Addr{}, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}}
	sw, err := check.New(src, check.Config{Failures: 1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	res, err := sw.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 {
		t.Fatalf("the sweep removed %d endpoints, want the dead one: the run did not do what it should", len(res.Removed))
	}
	ops := r.ops(t)
	return ops, r.changes
}

// recordByName opens the zone by name, as without --zone-id.
func recordByName(t *testing.T) map[string]bool {
	t.Helper()
	r := newRecorder(t)
	cfg := r.config()
	cfg.ZoneID = ""
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := route53backend.OpenZone(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return r.ops(t)
}

func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// diff returns what is in a and not in b.
func diff(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// TestPolicyActionsMatchTheCode compares the agent's and the sweep's IAM
// policies in deploy/aws/signpost.yaml with the Route 53 operations the
// code makes: a call added without its permission, or a permission the
// code never uses, fails it.
func TestPolicyActionsMatchTheCode(t *testing.T) {
	tpl := readTemplate(t, templatePath)
	root := filepath.Join("..", "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found at %s: %v", root, err)
	}
	// The recording runs name the zone by id, as the template does.
	agentCmd := templateCommand(t, tpl, nil)
	sweepCmd, err := strs(containerOf(t, tpl, "SweepTaskDefinition")["Command"])
	if err != nil {
		t.Fatalf("SweepTaskDefinition: Command: %v", err)
	}
	for what, cmd := range map[string][]string{"agent": agentCmd, "sweep": sweepCmd} {
		if !slices.Contains(cmd, "--zone-id") {
			t.Fatalf("the template's %s command %q has no --zone-id: the policies below assume it", what, cmd)
		}
	}
	static := staticOps(t, root)
	agentOps, agentChanges := recordAgent(t)
	sweepOps, sweepChanges := recordSweep(t)
	recorded := map[string]map[string]bool{
		"AgentTaskRole": agentOps,
		"SweepTaskRole": sweepOps,
	}
	changes := map[string][]r53emu.Change{
		"AgentTaskRole": agentChanges,
		"SweepTaskRole": sweepChanges,
	}
	byName := recordByName(t)

	for role, rec := range recorded {
		pol := tpl.route53Actions(t, role)
		t.Logf("%s: policy %v, code %v", role, keys(pol), keys(rec))
		if missing := diff(rec, pol); len(missing) > 0 {
			t.Errorf("%s: the code calls %v, which the policy does not grant: add them to the role in %s", role, missing, templatePath)
		}
		if extra := diff(pol, rec); len(extra) > 0 {
			t.Errorf("%s: the policy grants %v, which the code never calls: remove them from %s", role, extra, templatePath)
		}
		tpl.checkChangeConditions(t, role, changes[role])
	}

	// No other role may touch Route 53, and no role holds a FullAccess
	// or Route 53 managed policy.
	for id, r := range tpl.Resources {
		if r.Type != "AWS::IAM::Role" {
			continue
		}
		arns, _ := r.Properties["ManagedPolicyArns"].([]any)
		for _, a := range arns {
			if as := strings.ToLower(fmt.Sprint(a)); strings.Contains(as, "fullaccess") || strings.Contains(as, "route53") {
				t.Errorf("%s holds the managed policy %v: grant what the code calls, inline", id, a)
			}
		}
		if _, ok := recorded[id]; ok {
			continue
		}
		walkStrings(r.Properties, func(v string) {
			if strings.HasPrefix(strings.ToLower(v), "route53:") {
				t.Errorf("%s grants %s: only the agent's and the sweep's roles may touch Route 53", id, v)
			}
		})
	}

	// Every operation in the code is either exercised above, under a
	// role, or known not to be reached with the template's flags.
	all := map[string]bool{}
	for _, rec := range recorded {
		for op := range rec {
			all[op] = true
		}
	}
	for op, where := range static {
		_, excused := notUnderTemplate[op]
		switch {
		case all[op] && excused:
			t.Errorf("%s is called with the template's flags but listed in notUnderTemplate: drop it from there", op)
		case !all[op] && !excused:
			t.Errorf("the code calls route53 %s (%s), which neither the agent's nor the sweep's run reached: exercise it in recordAgent/recordSweep and grant it, or explain it in notUnderTemplate", op, strings.Join(where, ", "))
		}
	}
	for op := range all {
		if _, ok := static[op]; !ok {
			t.Errorf("the emulator received %s, which the source scan did not find: the scan misses a way of calling the SDK", op)
		}
	}
	for op := range notUnderTemplate {
		if _, ok := static[op]; !ok {
			t.Errorf("notUnderTemplate lists %s, which the code no longer calls: drop it", op)
		}
	}
	// The excuse holds: naming the zone by name is what calls it.
	if !byName["ListHostedZonesByName"] || byName["GetHostedZone"] {
		t.Errorf("opening the zone by name called %v, want ListHostedZonesByName and not GetHostedZone", keys(byName))
	}
}

// walkStrings calls fn with every string in a decoded YAML value.
func walkStrings(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		fn(x)
	case []any:
		for _, e := range x {
			walkStrings(e, fn)
		}
	case map[any]any:
		for _, e := range x {
			walkStrings(e, fn)
		}
	case map[string]any:
		for _, e := range x {
			walkStrings(e, fn)
		}
	}
}

// The condition keys of ChangeResourceRecordSets (Route 53's documented
// keys, see the Route 53 Developer Guide, "Using IAM policy conditions
// for fine-grained access control"), and the operators the template uses.
const (
	keyRecordTypes = "route53:ChangeResourceRecordSetsRecordTypes"
	keyActions     = "route53:ChangeResourceRecordSetsActions"
	keyNames       = "route53:ChangeResourceRecordSetsNormalizedRecordNames"
)

// checkChangeConditions compares the conditions of a role's
// ChangeResourceRecordSets statement with the changes the code sent
// under that role: every change must be allowed (AWS would deny it
// otherwise), and every action and record type allowed must be one the
// code sends (least privilege).
func (tpl *template) checkChangeConditions(t *testing.T, role string, sent []r53emu.Change) {
	t.Helper()
	if len(sent) == 0 {
		t.Errorf("%s: the recording run sent no record change: it does not exercise ChangeResourceRecordSets", role)
		return
	}
	var allowed map[string][]string
	for _, st := range tpl.roleStatements(t, role) {
		if !slices.Contains(st.Actions, "route53:ChangeResourceRecordSets") {
			continue
		}
		if st.Condition == nil {
			t.Errorf("%s: ChangeResourceRecordSets is granted without conditions: limit its actions and record types", role)
			return
		}
		allowed = map[string][]string{}
		for op, keys := range st.Condition {
			km, _ := keys.(map[any]any)
			for k, v := range km {
				key := fmt.Sprint(k)
				vals, err := strs(v)
				if err != nil {
					t.Fatalf("%s: condition %v %s: %v", role, op, key, err)
				}
				switch {
				case op == "ForAllValues:StringEquals" && (key == keyRecordTypes || key == keyActions),
					op == "ForAllValues:StringLike" && key == keyNames:
					allowed[key] = vals
				default:
					t.Errorf("%s: condition %v %s: the test cannot evaluate it; teach checkChangeConditions", role, op, key)
				}
			}
		}
	}
	if allowed == nil {
		t.Fatalf("%s: no statement grants ChangeResourceRecordSets", role)
	}
	for _, key := range []string{keyRecordTypes, keyActions} {
		if _, ok := allowed[key]; !ok {
			t.Errorf("%s: ChangeResourceRecordSets without a %s condition", role, key)
		}
	}
	usedTypes, usedActions := map[string]bool{}, map[string]bool{}
	for _, ch := range sent {
		usedTypes[ch.Type], usedActions[ch.Action] = true, true
		name := strings.TrimSuffix(strings.ToLower(ch.Name), ".") // as Route 53 normalizes it
		switch {
		case !slices.Contains(allowed[keyActions], ch.Action):
			t.Errorf("%s: the code sends %s of %s %s, which the policy's %s condition denies", role, ch.Action, ch.Type, ch.Name, keyActions)
		case !slices.Contains(allowed[keyRecordTypes], ch.Type):
			t.Errorf("%s: the code sends %s of %s %s, which the policy's %s condition denies", role, ch.Action, ch.Type, ch.Name, keyRecordTypes)
		case allowed[keyNames] != nil && !slices.ContainsFunc(allowed[keyNames], func(p string) bool {
			ok, err := path.Match(strings.ReplaceAll(p, "${ZoneName}", zoneName), name)
			return err == nil && ok
		}):
			t.Errorf("%s: the code sends %s of %s %s, whose name the policy's %s condition %v denies", role, ch.Action, ch.Type, name, keyNames, allowed[keyNames])
		}
	}
	for _, a := range allowed[keyActions] {
		if !usedActions[a] {
			t.Errorf("%s: the policy allows the change action %s, which the code never sends", role, a)
		}
	}
	for _, typ := range allowed[keyRecordTypes] {
		if !usedTypes[typ] {
			t.Errorf("%s: the policy allows changes of %s records, which the code never sends", role, typ)
		}
	}
	t.Logf("%s: record changes sent: actions %v, types %v", role, keys(usedActions), keys(usedTypes))
}
