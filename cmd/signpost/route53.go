package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	route53backend "github.com/signpost-dns/signpost/internal/backend/route53"
	"github.com/signpost-dns/signpost/internal/check"
)

// route53Flags adds the flags that select and reach a Route 53 hosted zone,
// shared by `agent --backend route53` and `check --backend route53`.
func route53Flags(fs *flag.FlagSet) func(log *slog.Logger) route53backend.Config {
	var c route53backend.Config
	fs.StringVar(&c.Zone, "zone", "servicediscovery.internal", "route53: hosted zone name (exact match; private zones only unless --allow-public-zone)")
	fs.StringVar(&c.ZoneID, "zone-id", "", "route53: hosted zone id, when the name matches several zones")
	fs.BoolVar(&c.AllowPublic, "allow-public-zone", false, "route53: accept a public hosted zone")
	fs.StringVar(&c.Endpoint, "route53-endpoint", "", "route53: API endpoint URL (default: AWS's; for VPC endpoints)")
	fs.StringVar(&c.Region, "region", "", "route53: AWS region (default: from the environment or instance metadata)")
	fs.Float64Var(&c.Rate, "route53-rate", route53backend.DefaultRate, "route53: API requests a second at most, retries included (Route 53's quota is 10 a second per account, shared by every agent and caller in it)")
	fs.DurationVar(&c.Window, "route53-window", route53backend.DefaultWindow, "route53: changes arriving within this window go in one request")
	ttl := fs.Duration("route53-ttl", time.Duration(route53backend.DefaultTTL)*time.Second, "route53: TTL of the records written (the original agent used 0)")
	return func(log *slog.Logger) route53backend.Config {
		c.TTL = int64(ttl.Seconds())
		c.Log = log
		return c
	}
}

// route53CheckFlags adds the Route 53 flags of `signpost check` and returns
// the source constructor.
func route53CheckFlags(fs *flag.FlagSet) func(ctx context.Context, log *slog.Logger) (check.Source, error) {
	mk := route53Flags(fs)
	resolver := fs.String("resolver", "", "route53: DNS server (host:port) that resolves SRV targets (default: the system resolver; in a VPC it answers the private zone)")
	return func(ctx context.Context, log *slog.Logger) (check.Source, error) {
		zone, err := route53backend.OpenZone(ctx, mk(log))
		if err != nil {
			return nil, err
		}
		return &check.Route53Source{Zone: zone, Resolve: check.SystemResolve(*resolver)}, nil
	}
}
