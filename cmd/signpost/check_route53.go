package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"

	"github.com/signpost-dns/signpost/internal/check"
)

// route53CheckFlags adds the Route 53 flags of `signpost check` and returns
// the source constructor.
func route53CheckFlags(fs *flag.FlagSet) func(ctx context.Context, log *slog.Logger) (check.Source, error) {
	return func(ctx context.Context, log *slog.Logger) (check.Source, error) {
		return nil, errors.New("--backend route53: not built yet")
	}
}
