package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signpost-dns/signpost/internal/registry"
)

// TestClassify: every form in which etcd 3.4 and 3.5+ servers, and the
// client, say that the cluster did not answer or cannot take a request
// now, as the client hands them over (gRPC statuses, rpctypes values,
// context errors), wrapped or not.
func TestClassify(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want errKind
	}{
		{"3.4 relays its request context's deadline", status.Error(codes.Unknown, "context deadline exceeded"), kindTimeout},
		{"client deadline", context.DeadlineExceeded, kindTimeout},
		{"gRPC DeadlineExceeded", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), kindTimeout},
		{"member unreachable", status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused\""), kindTransient},
		{"no leader", rpctypes.ErrNoLeader, kindTransient},
		{"no leader as sent", rpctypes.ErrGRPCNoLeader, kindTransient},
		{"not leader", rpctypes.ErrNotLeader, kindTransient},
		{"leader changed", rpctypes.ErrLeaderChanged, kindTransient},
		{"timed out due to leader failure", rpctypes.ErrTimeoutDueToLeaderFail, kindTransient},
		{"timed out due to connection lost", rpctypes.ErrTimeoutDueToConnectionLost, kindTransient},
		{"request timed out", rpctypes.ErrTimeout, kindTransient},
		{"too many requests", rpctypes.ErrTooManyRequests, kindTransient},
		{"server stopped", rpctypes.ErrStopped, kindTransient},
		{"unhealthy", rpctypes.ErrUnhealthy, kindTransient},
		{"no endpoints", clientv3.ErrNoAvailableEndpoints, kindTransient},
		{"wrapped", fmt.Errorf("grant lease: %w", rpctypes.ErrLeaderChanged), kindTransient},
		{"wrapped status", fmt.Errorf("read lease: %w", status.Error(codes.Unknown, context.DeadlineExceeded.Error())), kindTimeout},
		{"member starting", rpctypes.ErrNotCapable, kindTransient},
		{"member canceled the request", rpctypes.ErrGRPCCanceled, kindTransient},
		{"database full", rpctypes.ErrNoSpace, kindDown},
		{"corrupt", rpctypes.ErrCorrupt, kindDown},
		{"lease not found", rpctypes.ErrLeaseNotFound, kindOther},
		{"request too large", rpctypes.ErrRequestTooLarge, kindOther},
		{"a member's raft node stopped (sent as Unknown)", status.Error(codes.Unknown, "raft: stopped"), kindTransient},
		{"other unknown", status.Error(codes.Unknown, "something else"), kindOther},
		{"not etcd's", errors.New("decode instance: bad JSON"), kindOther},
		{"conflict", registry.ErrConflict, kindOther},
	} {
		if got := classify(c.err); got != c.want {
			t.Errorf("%s: classify(%v) = %d, want %d", c.name, c.err, got, c.want)
		}
	}
}

// TestUnavailableSaysWhatHappened: the message of a failed write names
// what etcd did, not always a timeout.
func TestUnavailableSaysWhatHappened(t *testing.T) {
	for _, c := range []struct {
		last, refused error
		took          time.Duration
		tries         int
		want          string
	}{
		{context.DeadlineExceeded, nil, 5 * time.Second, 1, "etcd did not answer within 5s: store unavailable"},
		{status.Error(codes.Unknown, "context deadline exceeded"), nil, 5 * time.Second, 3, "etcd did not answer within 5s (3 attempts)"},
		{context.DeadlineExceeded, rpctypes.ErrNoLeader, 5 * time.Second, 4, "the etcd cluster has no leader (quorum lost?), then did not answer within 5s (4 attempts)"},
		{rpctypes.ErrLeaderChanged, rpctypes.ErrLeaderChanged, 4990 * time.Millisecond, 9, "the etcd leader changed; still so after 4.99s (9 attempts)"},
		{rpctypes.ErrTooManyRequests, rpctypes.ErrTooManyRequests, 5 * time.Second, 9, "etcd is overloaded (too many requests); still so after 5s"},
		{rpctypes.ErrNoSpace, rpctypes.ErrNoSpace, 3 * time.Millisecond, 1, "etcd's database is full (its NOSPACE alarm"},
	} {
		err := unavailable("put instance \"a\"", c.last, c.refused, 5*time.Second, c.took, c.tries)
		if !strings.Contains(err.Error(), c.want) || !errors.Is(err, registry.ErrUnavailable) || !errors.Is(err, c.last) {
			t.Errorf("unavailable(%v, %v) = %q, want it to contain %q and wrap ErrUnavailable and the last error", c.last, c.refused, err, c.want)
		}
	}
}
