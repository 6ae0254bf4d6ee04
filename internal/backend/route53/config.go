package route53backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/aws/smithy-go/middleware"
	"golang.org/x/time/rate"

	"github.com/signpost-dns/signpost/internal/registry"
)

// Defaults of Config.
const (
	// DefaultTTL is the TTL of every record, in seconds: 0, as the
	// original agent wrote them, so that resolvers never cache an instance
	// that is gone. Raise it to cut resolver traffic.
	DefaultTTL = 0
	// DefaultRate is the most Route 53 API requests a second one backend
	// makes, every retry included. Route 53's request-rate quota is ten a
	// second per account (a bucket of 50 refilled at 10 a second, since
	// 30 July 2026; it was five before), shared by every caller in the
	// account: stay under it, with room for the others.
	DefaultRate = 8.0
	// DefaultBurst is the limiter's burst.
	DefaultBurst = 1
	// DefaultWindow is how long changes are gathered before they are
	// written in one ChangeResourceRecordSets request.
	DefaultWindow = 100 * time.Millisecond
	// DefaultMaxAttempts is how many times the SDK tries one request
	// (Throttling, PriorRequestNotComplete, 5xx and connection errors are
	// retried with exponential backoff and jitter).
	DefaultMaxAttempts = 10
	// DefaultMaxBackoff caps the wait between two attempts.
	DefaultMaxBackoff = 20 * time.Second
	// DefaultRegion is used when neither the environment, the shared
	// config nor the EC2 instance metadata gives one: Route 53 is a global
	// service, signed for us-east-1 in the aws partition.
	DefaultRegion = "us-east-1"
)

// Config configures the Route 53 backend and the zone handle the checker
// uses. It is plain data; zero values take the defaults above.
type Config struct {
	// Zone is the hosted zone's domain name ("servicediscovery.internal").
	// Required unless ZoneID is set; when both are set they must agree.
	Zone string
	// ZoneID picks the hosted zone by id ("Z0123..." or
	// "/hostedzone/Z0123...") instead of by name.
	ZoneID string
	// AllowPublic lets the backend use a public hosted zone. By default
	// only private zones are considered.
	AllowPublic bool

	// Hostname is this host's name: the SRV target, the prefix of every
	// SetIdentifier this host owns, and (its first label) the name of the
	// host's A record. Default: os.Hostname(). The agent only.
	Hostname string
	// HostAddress is the address of the host's A (or AAAA) record. When
	// unset, the address of the first instance registered is used. The
	// agent only.
	HostAddress netip.Addr
	// TTL of every record, in seconds (default 0, as the original agent).
	TTL int64

	// Endpoint replaces the Route 53 endpoint URL (a VPC endpoint, or the
	// emulator in tests).
	Endpoint string
	// Region overrides the region from the environment, shared config or
	// EC2 instance metadata.
	Region string
	// Credentials replaces the SDK's default credential chain (tests).
	Credentials aws.CredentialsProvider

	// Rate is the most API requests a second (default 8); Burst the
	// limiter's burst (default 1).
	Rate  float64
	Burst int
	// Window is how long changes are coalesced before a write (default
	// 100ms).
	Window time.Duration
	// MaxAttempts and MaxBackoff configure the SDK's standard retryer
	// (defaults 10 and 20s).
	MaxAttempts int
	MaxBackoff  time.Duration

	// Log receives the backend's structured logs (default slog.Default()).
	Log *slog.Logger
}

func (c *Config) defaults() error {
	c.Zone = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(c.Zone)), ".")
	c.ZoneID = strings.TrimPrefix(strings.TrimSpace(c.ZoneID), "/hostedzone/")
	if c.Zone == "" && c.ZoneID == "" {
		return errors.New("route53: no zone: set the zone name or the zone id")
	}
	if c.Zone != "" {
		for _, l := range strings.Split(c.Zone, ".") {
			if err := checkZoneLabel(l); err != nil {
				return fmt.Errorf("route53: zone name %q: label %q: %w", c.Zone, l, err)
			}
		}
	}
	if c.TTL < 0 || c.TTL > 2147483647 {
		return fmt.Errorf("route53: TTL %d: want 0-2147483647 seconds", c.TTL)
	}
	orDefault(&c.Rate, DefaultRate)
	orDefault(&c.Burst, DefaultBurst)
	orDefault(&c.Window, DefaultWindow)
	orDefault(&c.MaxAttempts, DefaultMaxAttempts)
	orDefault(&c.MaxBackoff, DefaultMaxBackoff)
	switch {
	case c.Rate <= 0:
		return fmt.Errorf("route53: rate %g: want a positive number of requests a second", c.Rate)
	case c.Burst < 1:
		return fmt.Errorf("route53: burst %d: want at least 1", c.Burst)
	case c.Window < 0:
		return fmt.Errorf("route53: coalescing window %s: want 0 or more", c.Window)
	case c.MaxAttempts < 1:
		return fmt.Errorf("route53: max attempts %d: want at least 1", c.MaxAttempts)
	case c.MaxBackoff <= 0:
		return fmt.Errorf("route53: max backoff %s: want more than 0", c.MaxBackoff)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// orDefault sets *p to def when it is zero.
func orDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

func checkZoneLabel(l string) error {
	if l == "" {
		return errors.New("empty")
	}
	return registry.CheckLabel(strings.TrimPrefix(l, "_"))
}

// hostDefaults checks and fills the agent-only fields.
func (c *Config) hostDefaults() error {
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("route53: no hostname given and os.Hostname failed: %w", err)
		}
		c.Hostname = h
	}
	c.Hostname = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(c.Hostname)), ".")
	if len(c.Hostname) > 253 {
		return fmt.Errorf("route53: hostname %q: longer than 253 characters", c.Hostname)
	}
	for _, l := range strings.Split(c.Hostname, ".") {
		if err := registry.CheckLabel(l); err != nil {
			return fmt.Errorf("route53: hostname %q: label %q: %w", c.Hostname, l, err)
		}
	}
	if c.HostAddress.IsValid() {
		c.HostAddress = c.HostAddress.Unmap()
		if c.HostAddress.IsUnspecified() || c.HostAddress.IsMulticast() || c.HostAddress.Zone() != "" {
			return fmt.Errorf("route53: host address %s cannot be published in an A/AAAA record", c.HostAddress)
		}
	}
	return nil
}

// newClient builds the SDK client: default credential chain, region from
// the environment, shared config or instance metadata, the standard
// retryer (which retries Throttling, PriorRequestNotComplete, 5xx and
// connection errors with exponential backoff and jitter) and a rate
// limiter that every attempt, retries included, waits on.
func newClient(ctx context.Context, c *Config) (*route53.Client, *rate.Limiter, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if c.Region != "" {
		opts = append(opts, awsconfig.WithRegion(c.Region))
	} else {
		opts = append(opts, awsconfig.WithEC2IMDSRegion())
	}
	if c.Credentials != nil {
		opts = append(opts, awsconfig.WithCredentialsProvider(c.Credentials))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("route53: load AWS configuration: %w", err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = DefaultRegion
	}
	lim := rate.NewLimiter(rate.Limit(c.Rate), c.Burst)
	retryer := retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = c.MaxAttempts
		o.MaxBackoff = c.MaxBackoff
		// The client-side limiter below bounds the request rate; the
		// retry quota would only turn a long throttling spell into
		// failures.
		o.RateLimiter = ratelimit.None
	})
	client := route53.NewFromConfig(awsCfg, func(o *route53.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		o.Retryer = retryer
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Insert(limitMiddleware(lim), "Retry", middleware.After)
		})
	})
	return client, lim, nil
}

// limitMiddleware waits on the limiter before every attempt of a request.
func limitMiddleware(lim *rate.Limiter) middleware.FinalizeMiddleware {
	return middleware.FinalizeMiddlewareFunc("signpost:RateLimit",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			if err := lim.Wait(ctx); err != nil {
				return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("route53 rate limiter: %w", err)
			}
			return next.HandleFinalize(ctx, in)
		})
}
