package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/raft/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signpost-dns/signpost/internal/registry"
)

// errKind is what an error from an etcd call means for the write that got
// it, whatever the wording of the etcd server (3.4 and 3.5+ word the same
// failures differently).
type errKind int

const (
	// kindOther: etcd answered and refused for a reason of its own (a
	// lease not found, a request too large), or the error is not etcd's.
	kindOther errKind = iota
	// kindTransient: the cluster cannot take the request right now but
	// soon may: no leader, the leader changed, a member is stopping or
	// unreachable, too many requests. Worth trying again.
	kindTransient
	// kindTimeout: the cluster did not answer in time.
	kindTimeout
	// kindDown: the cluster answers but takes no writes until an
	// operator acts (its database is full, or it found corruption).
	kindDown
)

// grpcStatus is what gRPC status errors implement; the etcd client
// returns them for failures it has no rpctypes value for.
type grpcStatus interface{ GRPCStatus() *status.Status }

// grpcCode returns the gRPC code and message that err carries, from an
// rpctypes value or a gRPC status; codes.OK when it carries none.
func grpcCode(err error) (codes.Code, string) {
	var ee rpctypes.EtcdError
	var gs grpcStatus
	switch {
	case errors.As(err, &ee):
		return ee.Code(), ee.Error()
	case errors.As(err, &gs):
		st := gs.GRPCStatus()
		return st.Code(), st.Message()
	}
	return codes.OK, ""
}

// code returns the gRPC code that err carries (codes.OK: none).
func code(err error) codes.Code {
	c, _ := grpcCode(err)
	return c
}

// classify says what err, returned by an etcd call, means. It goes by the
// etcd client's error values and gRPC codes: every rpctypes error with
// code Unavailable (no leader, leader changed, request timed out due to a
// leader failure or a lost connection, server stopped, unhealthy cluster),
// not leader, not capable (a member starting), too many requests, a
// request the member canceled (stopping) and a member that cannot be
// reached are transient; a deadline, whether the client's own or relayed
// by the server (etcd 3.4 sends its request context's error back as code
// Unknown), is a timeout; a full database (NOSPACE) or a corrupt cluster
// is down.
func classify(err error) errKind {
	switch {
	case err == nil:
		return kindOther
	case errors.Is(err, context.DeadlineExceeded):
		return kindTimeout
	case errors.Is(err, rpctypes.ErrNoSpace), errors.Is(err, rpctypes.ErrCorrupt):
		return kindDown
	case errors.Is(err, rpctypes.ErrNotLeader), errors.Is(err, rpctypes.ErrTooManyRequests),
		errors.Is(err, rpctypes.ErrNotCapable), errors.Is(err, clientv3.ErrNoAvailableEndpoints):
		// A member that is starting does not know the cluster's version
		// yet: "not capable".
		return kindTransient
	}
	c, msg := grpcCode(err)
	switch c {
	case codes.DeadlineExceeded:
		return kindTimeout
	case codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return kindTransient
	case codes.Canceled:
		// The member canceled the request (it is stopping); a caller
		// that canceled its own call is told apart before classify.
		return kindTransient
	case codes.Unknown:
		switch msg {
		case context.DeadlineExceeded.Error():
			return kindTimeout
		case raft.ErrStopped.Error():
			// A member whose raft node stopped (it is being shut down)
			// sends raft's own error back unmapped, as code Unknown.
			return kindTransient
		}
	}
	return kindOther
}

// isRaftStopped says whether err is raft's "stopped", relayed by a member
// as code Unknown.
func isRaftStopped(err error) bool {
	c, msg := grpcCode(err)
	return c == codes.Unknown && msg == raft.ErrStopped.Error()
}

// meaning says in a few words what a transient or timeout error means to
// a user.
func meaning(err error) string {
	switch {
	case errors.Is(err, rpctypes.ErrNoLeader):
		return "the etcd cluster has no leader (quorum lost?)"
	case errors.Is(err, rpctypes.ErrLeaderChanged), errors.Is(err, rpctypes.ErrNotLeader),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail):
		return "the etcd leader changed"
	case errors.Is(err, rpctypes.ErrTooManyRequests):
		return "etcd is overloaded (too many requests)"
	case errors.Is(err, rpctypes.ErrStopped), code(err) == codes.Canceled, isRaftStopped(err):
		return "the etcd member is stopping"
	case errors.Is(err, rpctypes.ErrNotCapable):
		return "the etcd member is starting"
	case errors.Is(err, rpctypes.ErrNoSpace):
		return "etcd's database is full (its NOSPACE alarm: compact, defragment, then disarm it)"
	case errors.Is(err, rpctypes.ErrCorrupt):
		return "etcd reports a corrupt cluster"
	case errors.Is(err, rpctypes.ErrUnhealthy):
		return "the etcd cluster is unhealthy"
	case errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		errors.Is(err, rpctypes.ErrTimeoutWaitAppliedIndex):
		return "etcd timed the request out (quorum lost?)"
	}
	switch classify(err) {
	case kindTimeout:
		return "etcd did not answer"
	case kindTransient:
		return "no etcd member reachable"
	}
	return "etcd failed"
}

// errContended is returned by one attempt of a write whose compare failed
// (another write changed the keys meanwhile): read again and retry.
var errContended = errors.New("contended")

// Backoff between attempts after a transient error.
const (
	backoffMin = 20 * time.Millisecond
	backoffMax = 500 * time.Millisecond
	// minAttempt is the least time one attempt is given.
	minAttempt = time.Second
)

// attempts runs one store call, attempt after attempt, within the store's
// timeout (its budget, or the caller's deadline if sooner). attempt gets
// a context bounded by a third of the budget (at least a second) and
// returns nil when done, errContended to read
// again and retry (at most maxAttempts times), or an error. A transient
// etcd error (see classify) is retried after a backoff, and an attempt
// that got no answer is retried at once, while the budget lasts, so that a write that meets a leader election goes through; when
// etcd did not answer, or kept refusing until the budget ran out, the
// error wraps registry.ErrUnavailable and says what happened. Any other
// error is returned wrapped with what. A write that may have been applied
// before its error must find out on its next attempt.
func (s *Store) attempts(ctx context.Context, what string, attempt func(cctx context.Context) error) error {
	return s.retry(ctx, what, splitBudget, attempt)
}

// reads is attempts for a read whose one attempt may need the whole
// budget (a large List, a lease for every node): etcd answers reads
// without a proposal that a leader's death could lose.
func (s *Store) reads(ctx context.Context, what string, attempt func(cctx context.Context) error) error {
	return s.retry(ctx, what, wholeBudget, attempt)
}

// attemptTime says how much of the budget one attempt may take.
type attemptTime int

const (
	// splitBudget: a third of the budget, at least minAttempt. A request
	// that a member took for a leader that then died is never answered,
	// and the next attempt reaches the new leader.
	splitBudget attemptTime = iota
	// wholeBudget: all of what is left.
	wholeBudget
)

func (s *Store) retry(ctx context.Context, what string, share attemptTime, attempt func(cctx context.Context) error) error {
	return s.retryWithin(ctx, what, s.timeout, share, attempt)
}

// request bounds one etcd request of an attempt that may take the whole
// budget (wholeBudget) by a third of the store's timeout, at least
// minAttempt: a request that a member took for a leader that then died is
// never answered, and is cut and tried again.
func (s *Store) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(s.timeout/3, minAttempt))
}

// retryWithin is retry with a budget of its own.
func (s *Store) retryWithin(ctx context.Context, what string, budget time.Duration, share attemptTime, attempt func(cctx context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.closed.Err() != nil {
		return errClosed(what)
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	defer context.AfterFunc(s.closed, cancel)()
	budget = time.Until(deadlineOf(cctx))
	per := budget
	if share == splitBudget {
		per = max(budget/3, minAttempt)
	}
	backoff := backoffMin
	contended, tries := 0, 0
	var refused error // the last error by which etcd refused, rather than said nothing
	for {
		tries++
		actx, acancel := context.WithTimeout(cctx, per)
		err := attempt(actx)
		acancel()
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errContended):
			if contended++; contended >= maxAttempts {
				return fmt.Errorf("%s: still contended after %d attempts: %w", what, maxAttempts, registry.ErrUnavailable)
			}
			continue
		}
		if errors.Is(ctx.Err(), context.Canceled) {
			// The caller gave up: its error, not the store's.
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		if s.closed.Err() != nil {
			return errClosed(what)
		}
		kind := classify(err)
		if kind == kindOther {
			return fmt.Errorf("%s: %w", what, err)
		}
		if kind != kindTimeout {
			refused = err
		}
		left := time.Until(deadlineOf(cctx))
		if kind == kindDown || left <= 0 || cctx.Err() != nil {
			return unavailable(what, err, refused, budget, time.Since(start), tries)
		}
		if kind == kindTimeout {
			s.log.Debug("etcd did not answer an attempt; retrying", "what", what, "err", err, "attempt_timeout", per)
			continue // it waited already
		}
		wait := min(backoff/2+rand.N(backoff/2+1), left)
		s.log.Debug("etcd refused a request for now; retrying", "what", what, "err", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-cctx.Done():
			t.Stop()
		}
		backoff = min(backoff*2, backoffMax)
	}
}

// errClosed is the error of a call made or cut short by Close.
func errClosed(what string) error {
	return fmt.Errorf("%s: the etcd store is closed (the server is stopping): %w", what, registry.ErrUnavailable)
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// unavailable builds the error of a call that etcd did not answer or kept
// refusing: it says what happened, for how long, and wraps both
// registry.ErrUnavailable and etcd's last error.
func unavailable(what string, last, refused error, budget, took time.Duration, tries int) error {
	budget = budget.Round(time.Millisecond)
	n := ""
	if tries > 1 {
		n = fmt.Sprintf(" (%d attempts)", tries)
	}
	var why string
	switch {
	case classify(last) == kindTimeout && refused == nil:
		why = fmt.Sprintf("etcd did not answer within %s%s", budget, n)
	case classify(last) == kindTimeout:
		why = fmt.Sprintf("%s, then did not answer within %s%s", meaning(refused), budget, n)
	case tries == 1:
		why = meaning(last)
	default:
		why = fmt.Sprintf("%s; still so after %s%s", meaning(last), took.Round(time.Millisecond), n)
	}
	return fmt.Errorf("%s: %w", what, &registry.UnavailableError{Reason: why, Err: last})
}

// fail wraps err, from one etcd call outside a retried write, with what
// failed; when etcd did not answer or refused for now (and the caller's
// own context is still live) the error wraps registry.ErrUnavailable.
func (s *Store) fail(ctx context.Context, err error, what string) error {
	if ctx.Err() == nil && classify(err) != kindOther {
		why := meaning(err)
		if classify(err) == kindTimeout {
			why = fmt.Sprintf("etcd did not answer within %s", s.timeout)
		}
		return fmt.Errorf("%s: %w", what, &registry.UnavailableError{Reason: why, Err: err})
	}
	return fmt.Errorf("%s: %w", what, err)
}
