package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
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

// clientFlags adds --server and --token-file and returns a constructor.
func clientFlags(fs *flag.FlagSet) func() (*apiclient.Client, error) {
	srv := fs.String("server", envOr("SIGNPOST_SERVER", "http://127.0.0.1:8080"), "signpost server API URL (env SIGNPOST_SERVER)")
	tokenFile := fs.String("token-file", os.Getenv("SIGNPOST_TOKEN_FILE"), "file holding the API bearer token (env SIGNPOST_TOKEN_FILE)")
	return func() (*apiclient.Client, error) {
		tok := ""
		if *tokenFile != "" {
			var err error
			if tok, err = server.ReadToken(*tokenFile); err != nil {
				return nil, err
			}
		}
		return apiclient.New(*srv, tok)
	}
}

func runServices(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("services", "[flags] [SERVICE]")
	mkClient := clientFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return errUsage
	}
	c, err := mkClient()
	if err != nil {
		return err
	}
	if fs.NArg() == 1 {
		return printInstances(ctx, c, fs.Arg(0), stdout)
	}
	list, err := c.Services(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tPROTOCOLS\tINSTANCES\tPASSING")
	for _, s := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", s.Name, strings.Join(s.Protocols, ","), s.Instances, s.Passing)
	}
	return tw.Flush()
}

func runLookup(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("lookup", "[flags] NAME   (calc, _calc._tcp, or a full name)")
	dnsAddr := fs.String("dns", envOr("SIGNPOST_DNS", "127.0.0.1:8053"), "DNS server to ask (env SIGNPOST_DNS)")
	zone := fs.String("zone", "servicediscovery.internal", "zone appended to names without it")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for an answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
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
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PRIORITY\tWEIGHT\tPORT\tTARGET\tADDRESS\tTTL")
	for _, s := range srvs {
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%s\t%d\n", s.Priority, s.Weight, s.Port, s.Target, strings.Join(addrs[s.Target], ","), s.Hdr.Ttl)
	}
	return tw.Flush()
}

// printInstances prints one service's instances with their health.
func printInstances(ctx context.Context, c *apiclient.Client, name string, stdout io.Writer) error {
	svc, err := c.Service(ctx, name, 0, 0)
	if err != nil {
		return err
	}
	if len(svc.Instances) == 0 {
		return fmt.Errorf("service %q: no instances registered", name)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tPORT\tPROTO\tNODE\tHEALTH\tCHECKED\tOUTPUT")
	for _, in := range svc.Instances {
		checked := "-"
		if !in.Health.CheckedAt.IsZero() {
			checked = in.Health.CheckedAt.Local().Format(time.TimeOnly)
		}
		node := in.Node
		if node == "" {
			node = "(by hand)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", in.ID, in.Address, in.Port, in.Protocol, node, in.Health.Status, checked, in.Health.Output)
	}
	return tw.Flush()
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func runRegister(ctx context.Context, args []string, stdout io.Writer) error {
	fs := newFlagSet("register", "--service NAME --address IP --port N [flags]")
	mkClient := clientFlags(fs)
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
	if *service == "" || *addr == "" || *port == 0 {
		fs.Usage()
		return fmt.Errorf("--service, --address and --port are required")
	}
	if *port > 65535 || *weight > 65535 || *priority > 65535 || *weight == 0 {
		return fmt.Errorf("--port, --weight and --priority: want 1-65535 (priority 0-65535)")
	}
	ip, err := netip.ParseAddr(*addr)
	if err != nil {
		return fmt.Errorf("--address %q: not an IP address", *addr)
	}
	in.Service, in.Address, in.Port = *service, ip, uint16(*port)
	in.Weight, in.Priority, in.Tags = uint16(*weight), uint16(*priority), tags
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--meta %q: want KEY=VALUE", kv)
		}
		if in.Meta == nil {
			in.Meta = map[string]string{}
		}
		in.Meta[k] = v
	}
	in.Normalize()
	if in.ID == "" {
		in.ID = ManualID(in.Service, in.Address, in.Port, in.Protocol)
	}
	if err := in.Validate(); err != nil {
		return err
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
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	c, err := mkClient()
	if err != nil {
		return err
	}
	ids := fs.Args()
	sort.Strings(ids)
	for _, id := range ids {
		if _, err := c.Deregister(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "deregistered %s\n", id)
	}
	return nil
}
