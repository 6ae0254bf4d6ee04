package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/miekg/dns"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/registry"
	"github.com/signpost-dns/signpost/internal/server"
)

func init() {
	commands["services"] = command{"list the registered services, or one service's instances with their health", runServices}
	commands["lookup"] = command{"resolve a service by DNS SRV and print its instances", runLookup}
	commands["register"] = command{"register an instance by hand (a database on a VM, say)", runRegister}
	commands["deregister"] = command{"remove an instance registered by hand", runDeregister}
}

// timeoutFlag adds --timeout, the bound on a one-shot command's requests
// (a server that accepts and never answers would hold it forever), and
// returns what applies it to a context.
func timeoutFlag(fs *flag.FlagSet) func(context.Context) (context.Context, context.CancelFunc) {
	d := fs.Duration("timeout", 30*time.Second, "how long to wait for the server's answers (0: no limit)")
	return func(ctx context.Context) (context.Context, context.CancelFunc) {
		if *d <= 0 {
			return context.WithCancel(ctx)
		}
		return context.WithTimeout(ctx, *d)
	}
}

// clientFlags adds --server and --token-file and returns a constructor.
func clientFlags(fs *flag.FlagSet) func() (*apiclient.Client, error) {
	srv := serverFlag(fs)
	tokenFile := fs.String("token-file", credentialToken(), "file holding the API bearer token"+tokenFileHelp)
	return func() (*apiclient.Client, error) {
		urls, err := srv.URLs()
		if err != nil {
			return nil, usagef("--server: %v", err)
		}
		tok := ""
		if *tokenFile != "" {
			if tok, err = server.ReadToken(*tokenFile); err != nil {
				return nil, err
			}
		}
		c, err := apiclient.NewServers(urls, tok)
		if err != nil {
			return nil, usagef("--server: %v", err)
		}
		return c, nil
	}
}

// checkOutput says whether -o names one of the formats a command prints.
func checkOutput(o string) error {
	switch o {
	case "", "table", "wide", "json":
		return nil
	}
	return usagef("-o %q: want json or wide (default: a table)", o)
}

func runServices(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("services", "[flags] [SERVICE]")
	mkClient := clientFlags(fs)
	bound := timeoutFlag(fs)
	output := outputFlag(fs, "json or wide")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	if fs.NArg() > 1 {
		return usagef("one SERVICE at most, got %d: %s", fs.NArg(), strings.Join(fs.Args(), " "))
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	c, err := mkClient()
	if err != nil {
		return err
	}
	if fs.NArg() == 1 {
		return printInstances(ctx, c, fs.Arg(0), *output, stdout)
	}
	list, err := c.Services(ctx)
	if err != nil {
		return err
	}
	if *output == "json" {
		if list == nil {
			list = []registry.ServiceSummary{}
		}
		return writeJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if *output == "wide" {
		fmt.Fprintln(tw, "SERVICE\tPROTOCOLS\tINSTANCES\tPASSING\tNOT-PASSING\tSRV NAMES")
	} else {
		fmt.Fprintln(tw, "SERVICE\tPROTOCOLS\tINSTANCES\tPASSING")
	}
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d", s.Name, strings.Join(s.Protocols, ","), s.Instances, s.Passing)
		if *output == "wide" {
			names := make([]string, len(s.Protocols))
			for i, p := range s.Protocols {
				names[i] = "_" + s.Name + "._" + p
			}
			fmt.Fprintf(tw, "\t%d\t%s", s.Instances-s.Passing, strings.Join(names, ","))
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// srvAnswer is one SRV record of a lookup, with its target's addresses.
type srvAnswer struct {
	Priority  uint16   `json:"priority"`
	Weight    uint16   `json:"weight"`
	Port      uint16   `json:"port"`
	Target    string   `json:"target"`
	Addresses []string `json:"addresses"`
	TTL       uint32   `json:"ttl"`
}

func runLookup(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("lookup", "[flags] NAME   (calc, _calc._tcp, or a full name)")
	dnsAddr := fs.String("dns", "127.0.0.1:8053", "DNS server to ask")
	zone := fs.String("zone", "servicediscovery.internal", "zone appended to names without it")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for an answer")
	output := outputFlag(fs, "json or wide")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch fs.NArg() {
	case 0:
		return usagef("missing NAME: the service to look up (calc, _calc._tcp or a full name)")
	case 1:
	default:
		return usagef("one NAME at a time, got %d: %s", fs.NArg(), strings.Join(fs.Args(), " "))
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	name := dns.CanonicalName(fs.Arg(0))
	z := dns.CanonicalName(*zone)
	if !dns.IsSubDomain(z, name) {
		name = dns.CanonicalName(strings.TrimSuffix(fs.Arg(0), ".") + "." + z)
	}
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	m.SetEdns0(1232, false)
	cl := &dns.Client{Timeout: *timeout}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	r, _, err := cl.ExchangeContext(ctx, m, *dnsAddr)
	if err == nil && r.Truncated {
		cl.Net = "tcp"
		r, _, err = cl.ExchangeContext(ctx, m, *dnsAddr)
	}
	if err != nil {
		return fmt.Errorf("query %s SRV at %s: %w", name, *dnsAddr, err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return fmt.Errorf("%s: no such service (NXDOMAIN from %s)", name, *dnsAddr)
	default:
		return fmt.Errorf("%s: %s from %s", name, dns.RcodeToString[r.Rcode], *dnsAddr)
	}
	addrs := map[string][]string{}
	for _, rr := range r.Extra {
		switch v := rr.(type) {
		case *dns.A:
			addrs[v.Hdr.Name] = append(addrs[v.Hdr.Name], v.A.String())
		case *dns.AAAA:
			addrs[v.Hdr.Name] = append(addrs[v.Hdr.Name], v.AAAA.String())
		}
	}
	var srvs []*dns.SRV
	for _, rr := range r.Answer {
		if v, ok := rr.(*dns.SRV); ok {
			srvs = append(srvs, v)
		}
	}
	if len(srvs) == 0 {
		return fmt.Errorf("%s: no healthy instances (NODATA from %s)", name, *dnsAddr)
	}
	if err := resolveMissingGlue(ctx, *dnsAddr, *timeout, srvs, addrs); err != nil {
		return err
	}
	answers := make([]srvAnswer, 0, len(srvs))
	for _, s := range srvs {
		answers = append(answers, srvAnswer{Priority: s.Priority, Weight: s.Weight, Port: s.Port, Target: s.Target, Addresses: addrs[s.Target], TTL: s.Hdr.Ttl})
	}
	return printSRV(stdout, name, *dnsAddr, cl.Net, *output, answers)
}

// printSRV prints a lookup's answers in the -o format.
func printSRV(w io.Writer, name, server, transport, output string, answers []srvAnswer) error {
	if output == "json" {
		for i := range answers {
			if answers[i].Addresses == nil {
				answers[i].Addresses = []string{}
			}
		}
		return writeJSON(w, answers)
	}
	if transport == "" {
		transport = "udp"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if output == "wide" {
		fmt.Fprintln(tw, "NAME\tPRIORITY\tWEIGHT\tPORT\tTARGET\tADDRESS\tTTL\tSERVER")
	} else {
		fmt.Fprintln(tw, "PRIORITY\tWEIGHT\tPORT\tTARGET\tADDRESS\tTTL")
	}
	for _, a := range answers {
		if output == "wide" {
			fmt.Fprintf(tw, "%s\t", name)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d", a.Priority, a.Weight, a.Port, a.Target, strings.Join(a.Addresses, ","), a.TTL)
		if output == "wide" {
			fmt.Fprintf(tw, "\t%s/%s", server, transport)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

// printInstances prints one service's instances with their container,
// tags, metadata and health.
func printInstances(ctx context.Context, c *apiclient.Client, name, output string, stdout io.Writer) error {
	svc, err := c.Service(ctx, name, 0, 0)
	if err != nil {
		return err
	}
	if output == "json" {
		if svc.Instances == nil {
			svc.Instances = []registry.Instance{}
		}
		return writeJSON(stdout, svc)
	}
	if len(svc.Instances) == 0 {
		return fmt.Errorf("service %q: no instances registered", name)
	}
	wide := output == "wide"
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	if wide {
		fmt.Fprintln(tw, "ID\tADDRESS\tPORT\tPROTO\tWEIGHT\tPRIORITY\tNODE\tCONTAINER\tHEALTH\tCHECKED\tREGISTERED\tTAGS\tMETA\tOUTPUT")
	} else {
		fmt.Fprintln(tw, "ID\tADDRESS\tPORT\tPROTO\tNODE\tCONTAINER\tHEALTH\tCHECKED\tTAGS\tMETA\tOUTPUT")
	}
	for _, in := range svc.Instances {
		checked := "-"
		if !in.Health.CheckedAt.IsZero() {
			checked = in.Health.CheckedAt.Local().Format(time.TimeOnly)
		}
		node, container := in.Node, orDash(in.Container)
		if node == "" {
			node = "(by hand)"
		}
		out := orDash(strings.Join(strings.Fields(in.Health.Output), " "))
		if !wide && len(out) > 60 {
			out = out[:57] + "..."
		}
		tags, meta := orDash(strings.Join(in.Tags, ",")), orDash(metaString(in.Meta))
		if wide {
			registered := "-"
			if !in.RegisteredAt.IsZero() {
				registered = in.RegisteredAt.Local().Format(time.DateTime)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Address, in.Port, in.Protocol, in.Weight, in.Priority,
				node, container, in.Health.Status, checked, registered, tags, meta, out)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Address, in.Port, in.Protocol, node, container, in.Health.Status, checked, tags, meta, out)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// metaString is metadata as sorted key=value pairs.
func metaString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runRegister(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("register", "--service NAME --address IP --port N [flags]")
	mkClient := clientFlags(fs)
	bound := timeoutFlag(fs)
	var in registry.Instance
	service := fs.String("service", "", "service name: calc, or _calc._tcp / _calc._udp (required)")
	addr := fs.String("address", "", "the instance's IP address (required)")
	port := fs.Uint("port", 0, "the instance's port, 1-65535 (required)")
	fs.StringVar(&in.ID, "id", "", "instance id, a DNS label (default: derived from service, address, port and protocol)")
	fs.StringVar(&in.Protocol, "protocol", "", "tcp or udp (default tcp, or what the service name says)")
	weight := fs.Uint("weight", 1, "SRV weight, 1-65535")
	priority := fs.Uint("priority", 0, "SRV priority, 0-65535")
	var tags, meta stringList
	fs.Var(&tags, "tag", "a tag (repeatable)")
	fs.Var(&meta, "meta", "metadata KEY=VALUE, published in TXT (repeatable)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q: everything is a flag (--service, --address, --port)", fs.Arg(0))
	}
	var missing []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"--service", *service != ""}, {"--address", *addr != ""}, {"--port", *port != 0}} {
		if !f.set {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return usagef("missing %s: register needs --service, --address and --port", strings.Join(missing, ", "))
	}
	if *port > 65535 {
		return usagef("--port %d: want 1-65535", *port)
	}
	if *weight == 0 || *weight > 65535 {
		return usagef("--weight %d: want 1-65535", *weight)
	}
	if *priority > 65535 {
		return usagef("--priority %d: want 0-65535", *priority)
	}
	// The service is checked before an id is derived from it, so that a
	// bad name is reported as the name the user gave.
	if _, _, err := registry.ParseServiceName(*service); err != nil {
		return usagef("--service: %v", err)
	}
	ip, err := netip.ParseAddr(*addr)
	if err != nil {
		return usagef("--address %q: not an IP address", *addr)
	}
	in.Service, in.Address, in.Port = *service, ip, uint16(*port)
	in.Weight, in.Priority, in.Tags = uint16(*weight), uint16(*priority), tags
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return usagef("--meta %q: want KEY=VALUE", kv)
		}
		if in.Meta == nil {
			in.Meta = map[string]string{}
		}
		in.Meta[k] = v
	}
	in.Normalize()
	derived := in.ID == ""
	if derived {
		in.ID = ManualID(in.Service, in.Address, in.Port, in.Protocol)
	}
	if err := in.Validate(); err != nil {
		var fe *registry.FieldError
		if errors.As(err, &fe) && (fe.Field != "id" || !derived) {
			return usagef("--%s: %v", flagOf(fe.Field), err)
		}
		return err
	}
	if given := strings.TrimSpace(*service); given != strings.ToLower(given) {
		fmt.Fprintf(stdout, "note: service %q is registered as %q (DNS names are lower-case)\n", given, in.Service)
	}
	c, err := mkClient()
	if err != nil {
		return err
	}
	out, err := c.Register(ctx, in)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "registered %s: %s %s:%d (%s), index %d\n", in.ID, in.Service, in.Address, in.Port, in.Protocol, out.Index)
	return nil
}

// ManualID derives a stable instance id for a hand registration.
func ManualID(service string, addr netip.Addr, port uint16, proto string) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s|%s|%d|%s", service, addr, port, proto))
	prefix := service
	if len(prefix) > 40 {
		prefix = strings.TrimRight(prefix[:40], "-")
	}
	return prefix + "-" + hex.EncodeToString(h[:5])
}

func runDeregister(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("deregister", "[flags] ID...")
	mkClient := clientFlags(fs)
	bound := timeoutFlag(fs)
	force := fs.Bool("force", false, "also remove an instance that belongs to an agent's node (its agent registers it again at its next sync while its container runs)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	if fs.NArg() == 0 {
		return usagef("missing ID: the instance(s) to remove (signpost services NAME lists them)")
	}
	c, err := mkClient()
	if err != nil {
		return err
	}
	ids := fs.Args()
	sort.Strings(ids)
	for _, id := range ids {
		if *force {
			_, err = c.DeregisterForce(ctx, id)
		} else {
			_, err = c.Deregister(ctx, id)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deregistered %s\n", id)
	}
	return nil
}

// flagOf names the register flag that sets a registry field.
func flagOf(field string) string {
	switch {
	case field == "tags":
		return "tag"
	case strings.HasPrefix(field, "meta"):
		return "meta"
	}
	return field
}
