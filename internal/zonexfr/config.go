package zonexfr

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config's zero fields.
const (
	DefaultMaxTransfers   = 10
	DefaultTimeout        = time.Minute
	DefaultJournalSerials = 100
	DefaultJournalRecords = 100_000
	DefaultNotifyDelay    = time.Second
	DefaultNotifyTries    = 5
	DefaultNotifyTimeout  = 2 * time.Second
)

// Config is the configuration of zone transfers. Plain data; zero values
// take the defaults above. Transfers are off without Allow.
type Config struct {
	// Allow lists the source addresses that may transfer the zone. Empty:
	// transfers are off (AXFR and IXFR REFUSED, as without this package).
	Allow []netip.Prefix
	// Key, when set, is also required of every transfer (TSIG), and signs
	// the NOTIFY messages.
	Key *Key
	// Notify are the secondaries told of each change (RFC 1996).
	Notify []netip.AddrPort
	// MaxTransfers caps transfers running at once; past it, REFUSED.
	MaxTransfers int
	// Timeout is the longest a transfer connection stays open, however
	// slowly its client reads; a write that waits longer than the DNS
	// server's idle timeout (WriteTimeout) is cut sooner.
	Timeout time.Duration
	// WriteTimeout cuts a connection whose client leaves one message
	// unread for this long (default 10s).
	WriteTimeout time.Duration
	// JournalSerials and JournalRecords bound the IXFR journal: the last
	// JournalSerials changes, and no more than JournalRecords records
	// (deleted and added) in all. An older serial gets the whole zone.
	JournalSerials int
	JournalRecords int
	// NotifyDelay coalesces changes: a NOTIFY goes out NotifyDelay after
	// the first change, for the serial then; at most one per NotifyDelay.
	NotifyDelay time.Duration
	// NotifyTries is how many times a NOTIFY is sent to one secondary
	// until it answers, NotifyTimeout apart.
	NotifyTries   int
	NotifyTimeout time.Duration
	// Log gets the logs (default slog.Default()).
	Log *slog.Logger
	// Registerer gets the metrics (default: none kept).
	Registerer prometheus.Registerer
}

// Enabled reports whether transfers are on.
func (c Config) Enabled() bool { return len(c.Allow) > 0 }

func (c *Config) defaults() error {
	if len(c.Notify) > 0 && len(c.Allow) == 0 {
		return fmt.Errorf("NOTIFY to %s without any address allowed to transfer (--xfr-allow): the secondaries could not fetch the zone", c.Notify[0])
	}
	if c.MaxTransfers <= 0 {
		c.MaxTransfers = DefaultMaxTransfers
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.JournalSerials <= 0 {
		c.JournalSerials = DefaultJournalSerials
	}
	if c.JournalRecords <= 0 {
		c.JournalRecords = DefaultJournalRecords
	}
	if c.NotifyDelay <= 0 {
		c.NotifyDelay = DefaultNotifyDelay
	}
	if c.NotifyTries <= 0 {
		c.NotifyTries = DefaultNotifyTries
	}
	if c.NotifyTimeout <= 0 {
		c.NotifyTimeout = DefaultNotifyTimeout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Key is a TSIG key (RFC 8945).
type Key struct {
	Name      string // fully qualified, lower case
	Algorithm string // fully qualified: hmac-sha256.
	Secret    string // base64
}

// algorithms are the HMACs accepted, by the names NSD, BIND and Knot use.
var algorithms = map[string]string{
	"hmac-sha1":   dns.HmacSHA1,
	"hmac-sha224": dns.HmacSHA224,
	"hmac-sha256": dns.HmacSHA256,
	"hmac-sha384": dns.HmacSHA384,
	"hmac-sha512": dns.HmacSHA512,
}

// ParseKey reads a key written name:algorithm:base64secret
// (xfr-key:hmac-sha256:c2VjcmV0...). from names where it came from in
// errors, which never show the secret.
func ParseKey(text, from string) (*Key, error) {
	parts := strings.SplitN(strings.TrimSpace(text), ":", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("TSIG key in %s: want name:algorithm:base64secret", from)
	}
	name := dns.CanonicalName(parts[0])
	if _, ok := dns.IsDomainName(name); !ok || name == "." {
		return nil, fmt.Errorf("TSIG key in %s: name %q is not a domain name", from, parts[0])
	}
	alg, ok := algorithms[strings.ToLower(strings.TrimSuffix(parts[1], "."))]
	if !ok {
		return nil, fmt.Errorf("TSIG key %s in %s: algorithm %q: want hmac-sha256, hmac-sha384, hmac-sha512, hmac-sha224 or hmac-sha1", name, from, parts[1])
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) == 0 {
		return nil, fmt.Errorf("TSIG key %s in %s: the secret is not base64 (tsig-keygen or `openssl rand -base64 32` make one)", name, from)
	}
	return &Key{Name: name, Algorithm: alg, Secret: parts[2]}, nil
}

// ReadKeyFile reads a key from the first line of a file (see ParseKey).
func ReadKeyFile(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read TSIG key file %q: %w", path, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return ParseKey(line, fmt.Sprintf("file %q", path))
}

// secrets is the key as miekg/dns's TsigSecret wants it.
func (k *Key) secrets() map[string]string {
	if k == nil {
		return nil
	}
	return map[string]string{k.Name: k.Secret}
}
