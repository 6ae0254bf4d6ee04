// Package api is the signpost server's HTTP/JSON API: registrations, node
// leases, blocking queries and a server-sent event stream under /v1, with
// /healthz and /metrics beside them. Reads come from the registry index;
// writes go to the store and are answered once the index has them, so a
// client that wrote can read its write back at once, by API or DNS.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/signpost-dns/signpost/internal/apiclient"
	"github.com/signpost-dns/signpost/internal/httpguard"
	"github.com/signpost-dns/signpost/internal/registry"
)

// MaxBodyBytes caps a request body (httpguard's limits, in front, are
// lower).
const MaxBodyBytes = 8 << 20

// MaxWait is the longest wait of a blocking query.
const MaxWait = 10 * time.Minute

// Config configures the API handler.
type Config struct {
	Store registry.Store
	Index *registry.Index
	// DefaultTTL is the node lease TTL when a node request gives none.
	DefaultTTL time.Duration
	// MaxTTL caps node lease TTLs.
	MaxTTL time.Duration
	// Registry gets the API's metrics and backs /metrics (default: a new
	// registry).
	Registry *prometheus.Registry
	Log      *slog.Logger
	// HealthChecks are more checks /healthz reports, by name: a non-nil
	// error makes it answer 503 "degraded" and name the error (the agent
	// of signpost up: Docker unreachable).
	HealthChecks map[string]func() error
	// HealthInfo are more facts /healthz shows, by name (such as the
	// store's last contact): each value is encoded as JSON.
	HealthInfo map[string]func() any
}

// API serves the HTTP API.
type API struct {
	cfg     Config
	log     *slog.Logger
	mux     *http.ServeMux
	writes  *prometheus.CounterVec
	refused *prometheus.CounterVec
	snaps   *snapshots
}

// New builds the handler and registers its metrics.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil || cfg.Index == nil {
		return nil, errors.New("api: store and index are required")
	}
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = 10 * time.Second
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	a := &API{
		cfg: cfg,
		log: cfg.Log,
		mux: http.NewServeMux(),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_registrations_total",
			Help: "Writes accepted by the API, by operation.",
		}, []string{"op"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "signpost_api_refused_total",
			Help: "API requests refused, by HTTP status code.",
		}, []string{"code"}),
		snaps: newSnapshots(cfg.Index),
	}
	ix := cfg.Index
	collectors := []prometheus.Collector{
		a.writes, a.refused,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "signpost_lease_expired_instances_total",
			Help: "Instances removed because their node's lease expired.",
		}, func() float64 { return float64(ix.Expired()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "signpost_instances",
			Help: "Instances in the registry.",
		}, func() float64 { return float64(ix.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "signpost_registry_revision",
			Help: "Registry revision the index has applied.",
		}, func() float64 { return float64(ix.Rev()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "signpost_store_degraded",
			Help: "1 when the index cannot follow the store (answers may be stale), else 0.",
		}, func() float64 {
			if synced, _, err := ix.Status(); !synced || err != nil {
				return 1
			}
			return 0
		}),
	}
	for _, c := range collectors {
		if err := cfg.Registry.Register(c); err != nil {
			return nil, fmt.Errorf("register API metrics: %w", err)
		}
	}
	m := a.mux
	m.HandleFunc("GET /healthz", a.healthz)
	m.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	m.HandleFunc("GET /v1/services", a.listServices)
	m.HandleFunc("GET /v1/services/{name}", a.getService)
	m.HandleFunc("GET /v1/instances", a.listInstances)
	m.HandleFunc("GET /v1/instances/{id}", a.getInstance)
	m.HandleFunc("PUT /v1/instances/{id}", a.putInstance)
	m.HandleFunc("DELETE /v1/instances/{id}", a.deleteInstance)
	m.HandleFunc("GET /v1/nodes", a.listNodes)
	m.HandleFunc("PUT /v1/nodes/{node}", a.replaceNode)
	m.HandleFunc("POST /v1/nodes/{node}/heartbeat", a.heartbeat)
	m.HandleFunc("DELETE /v1/nodes/{node}", a.releaseNode)
	m.HandleFunc("GET /v1/watch", a.watch)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.fail(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path), "")
	})
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) fail(w http.ResponseWriter, status int, msg, field string) {
	a.refused.WithLabelValues(strconv.Itoa(status)).Inc()
	writeJSON(w, status, apiclient.ErrorResponse{Error: msg, Field: field})
}

// writeJSON answers with v: indented for people reading lists, compact for
// the answers to writes, which machines read at a high rate.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if _, write := v.(apiclient.WriteResponse); !write {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v)
}

// failErr maps a store or validation error to its status.
func (a *API) failErr(w http.ResponseWriter, err error) {
	var fe *registry.FieldError
	switch {
	case errors.As(err, &fe):
		a.fail(w, http.StatusBadRequest, err.Error(), fe.Field)
	case errors.Is(err, registry.ErrNotFound):
		a.fail(w, http.StatusNotFound, err.Error(), "")
	case errors.Is(err, registry.ErrNoLease):
		a.fail(w, http.StatusNotFound, err.Error(), "node")
	case errors.Is(err, registry.ErrConflict):
		a.fail(w, http.StatusConflict, err.Error(), "id")
	// The store's own error text stays in the server's log: it may name
	// files on the server, etcd endpoints, or another client's data that
	// shared the failed commit.
	case errors.Is(err, registry.ErrUnavailable):
		a.log.Warn("api write failed: store unavailable", "err", err)
		msg := "the registry's " + registry.ErrUnavailable.Error()
		if r := registry.UnavailableReason(err); r != "" {
			// What happened, in the store's words meant for clients.
			msg += " (" + r + ")"
		}
		a.fail(w, http.StatusServiceUnavailable, msg+": the write was not stored; retry", "")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		a.log.Warn("api write failed: timed out", "err", err)
		a.fail(w, http.StatusServiceUnavailable, "the registry's store did not answer in time: the write was not stored; retry", "")
	default:
		// The error may name a server path or what other writes in the
		// same commit held: it goes to the log, and the client gets a
		// reference to it.
		ref := incidentRef()
		a.log.Error("api write failed", "err", err, "ref", ref)
		a.fail(w, http.StatusInternalServerError, fmt.Sprintf("internal error in the store; the server's log has the details under ref=%s", ref), "")
	}
}

// incidentRef returns a short reference, unique in practice, that ties a
// 500 answer to its log line.
func incidentRef() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36)
}

// decodeStatus is the status of a decode error: 413 for a body over its
// limit (httpguard), else 400.
func decodeStatus(err error) int {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) || errors.Is(err, httpguard.ErrTooLarge) {
		return http.StatusRequestEntityTooLarge
	}
	return http.StatusBadRequest
}

// decode reads a JSON body strictly: one value, no unknown fields. The
// token, Content-Type and size limits are httpguard's, in front.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty body: want a JSON object")
		}
		if tooBig := (*http.MaxBytesError)(nil); errors.As(err, &tooBig) {
			return fmt.Errorf("request body over its limit of %d bytes: %w", tooBig.Limit, err)
		}
		return fmt.Errorf("bad JSON body: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("bad JSON body: more than one JSON value")
	}
	return nil
}

// settle waits until the index (and so DNS) shows rev, so that the writer
// reads its own write from this server as soon as it has the answer.
func (a *API) settle(r *http.Request, rev int64) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := a.cfg.Index.WaitRev(ctx, rev); err != nil {
		a.log.Warn("write acknowledged before the index caught up", "rev", rev, "err", err)
	}
}

// committed finishes a write: on error it answers with the error's status;
// otherwise it waits until the index shows rev, counts the write, and
// answers with rev.
func (a *API) committed(w http.ResponseWriter, r *http.Request, op string, rev int64, err error, in *registry.Instance) {
	if err != nil {
		a.failErr(w, err)
		return
	}
	a.settle(r, rev)
	a.writes.WithLabelValues(op).Inc()
	resp := apiclient.WriteResponse{Index: rev}
	if in != nil {
		if out, ok := a.cfg.Index.Get(in.ID); ok {
			resp.Instance = &out
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (a *API) putInstance(w http.ResponseWriter, r *http.Request) {
	var in registry.Instance
	if err := decode(r, &in); err != nil {
		a.fail(w, decodeStatus(err), err.Error(), "")
		return
	}
	id := r.PathValue("id")
	if in.ID == "" {
		in.ID = id
	}
	if !strings.EqualFold(in.ID, id) {
		a.fail(w, http.StatusBadRequest, fmt.Sprintf("instance id %q in the body differs from %q in the path", in.ID, id), "id")
		return
	}
	in.Normalize() // the store validates; the ID is read back lower-cased
	_, existed := a.cfg.Index.Get(in.ID)
	rev, err := a.cfg.Store.Put(r.Context(), in)
	a.committed(w, r, "put", rev, err, &in)
	if err == nil && !existed {
		a.logChange("instance registered", in, "PUT /v1/instances")
	}
}

// deleteInstance removes one instance. One that belongs to an agent's node
// is refused (409) unless that node asks (?node=) or the caller forces it
// (?force=true): its agent would register it again at its next sync.
func (a *API) deleteInstance(w http.ResponseWriter, r *http.Request) {
	id := strings.ToLower(r.PathValue("id"))
	q := r.URL.Query()
	old, known := a.cfg.Index.Get(id)
	force := q.Get("force") == "true"
	if known && old.Node != "" && q.Get("node") != old.Node && !force {
		owner := fmt.Sprintf("node %q", old.Node)
		if old.Container != "" {
			owner += fmt.Sprintf(" (container %q)", old.Container)
		}
		a.fail(w, http.StatusConflict, fmt.Sprintf("instance %q belongs to %s, whose agent registers it again at its next sync: stop the container or set SERVICE_IGNORE on it; to remove it anyway, force it (signpost deregister --force, or ?force=true)", id, owner), "node")
		return
	}
	rev, err := a.cfg.Store.Delete(r.Context(), id)
	a.committed(w, r, "delete", rev, err, nil)
	if err == nil && known {
		why := "DELETE /v1/instances"
		if force {
			why += " (forced)"
		}
		a.logChange("instance deregistered", old, why)
	}
}

// logChange logs one registration or deregistration, at INFO.
func (a *API) logChange(msg string, in registry.Instance, why string) {
	a.log.Info(msg, "id", in.ID, "service", in.Service, "address", netip.AddrPortFrom(in.Address, in.Port).String(),
		"node", in.Node, "container", in.Container, "why", why)
}

func (a *API) replaceNode(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	var req apiclient.NodeRequest
	if err := decode(r, &req); err != nil {
		a.fail(w, decodeStatus(err), err.Error(), "")
		return
	}
	if err := httpguard.CheckItems(r, len(req.Instances)); err != nil {
		a.fail(w, decodeStatus(err), err.Error(), "instances")
		return
	}
	ttl := a.cfg.DefaultTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second || d > a.cfg.MaxTTL {
			a.fail(w, http.StatusBadRequest, fmt.Sprintf("invalid ttl %q: want a duration from 1s to %s", req.TTL, a.cfg.MaxTTL), "ttl")
			return
		}
		ttl = d
	}
	for _, in := range req.Instances {
		if in.Node != "" && in.Node != node {
			a.fail(w, http.StatusBadRequest, fmt.Sprintf("instance %q names node %q, not %q", in.ID, in.Node, node), "node")
			return
		}
	}
	var added []registry.Instance
	listed := make(map[string]bool, len(req.Instances))
	for _, in := range req.Instances {
		id := strings.ToLower(in.ID)
		listed[id] = true
		if _, ok := a.cfg.Index.Get(id); !ok {
			added = append(added, in)
		}
	}
	// What the node has now and its sync no longer lists (a container
	// gone while its agent was away, say) is removed: name each one.
	var dropped []registry.Instance
	had, _ := a.cfg.Index.Node(node)
	for _, in := range had {
		if !listed[in.ID] {
			dropped = append(dropped, in)
		}
	}
	// The store validates every instance (registry.PrepareNodeSet).
	rev, err := a.cfg.Store.ReplaceNode(r.Context(), node, ttl, req.Instances)
	a.committed(w, r, "replace_node", rev, err, nil)
	if err != nil {
		return
	}
	for _, in := range added {
		in.Normalize()
		in.Node = node
		a.logChange("instance registered", in, "PUT /v1/nodes (the node's sync)")
	}
	for _, in := range dropped {
		a.logChange("instance deregistered", in, "PUT /v1/nodes (the node's sync no longer lists it)")
	}
}

func (a *API) heartbeat(w http.ResponseWriter, r *http.Request) {
	if err := a.cfg.Store.KeepAlive(r.Context(), r.PathValue("node")); err != nil {
		a.failErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, apiclient.WriteResponse{Index: a.cfg.Index.Rev()})
}

func (a *API) releaseNode(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("node")
	had, _ := a.cfg.Index.Node(node)
	rev, err := a.cfg.Store.ReleaseNode(r.Context(), node)
	a.committed(w, r, "release_node", rev, err, nil)
	for i := 0; err == nil && i < len(had); i++ {
		a.logChange("instance deregistered", had[i], "DELETE /v1/nodes (the node released its lease)")
	}
}

func (a *API) listNodes(w http.ResponseWriter, r *http.Request) {
	leases, err := a.cfg.Store.Leases(r.Context())
	if err != nil {
		a.failErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, leases)
}

func (a *API) listServices(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(apiclient.IndexHeader, strconv.FormatInt(a.cfg.Index.Rev(), 10))
	writeJSON(w, http.StatusOK, a.cfg.Index.Services())
}

// blocking reads ?index= and ?wait= of a blocking query.
func blocking(r *http.Request) (index int64, wait time.Duration, err error) {
	if v := r.URL.Query().Get("index"); v != "" {
		index, err = strconv.ParseInt(v, 10, 64)
		if err != nil || index < 0 {
			return 0, 0, fmt.Errorf("invalid index %q: want a non-negative integer", v)
		}
	}
	wait = 5 * time.Minute
	if v := r.URL.Query().Get("wait"); v != "" {
		wait, err = time.ParseDuration(v)
		if err != nil || wait <= 0 || wait > MaxWait {
			return 0, 0, fmt.Errorf("invalid wait %q: want a duration up to %s", v, MaxWait)
		}
	}
	return index, wait, nil
}

func (a *API) getService(w http.ResponseWriter, r *http.Request) {
	name, _, err := registry.ParseServiceName(r.PathValue("name"))
	if err != nil {
		a.failErr(w, err)
		return
	}
	index, wait, err := blocking(r)
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), "")
		return
	}
	if index > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		a.cfg.Index.WaitService(ctx, name, index)
		cancel()
	}
	a.serveSnapshot(w, a.snaps.forService(name), false)
}

func (a *API) listInstances(w http.ResponseWriter, r *http.Request) {
	index, wait, err := blocking(r)
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), "")
		return
	}
	if index > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		a.cfg.Index.WaitAny(ctx, index)
		cancel()
	}
	node := r.URL.Query().Get("node")
	if node == "" {
		a.serveSnapshot(w, a.snaps.forAll(), true)
		return
	}
	// One node's instances (an agent's start-up, Backend.Known): copied
	// alone, not the whole registry.
	mine, rev := a.cfg.Index.Node(node)
	w.Header().Set(apiclient.IndexHeader, strconv.FormatInt(rev, 10))
	writeJSON(w, http.StatusOK, mine)
}

func (a *API) getInstance(w http.ResponseWriter, r *http.Request) {
	id := strings.ToLower(r.PathValue("id"))
	in, ok := a.cfg.Index.Get(id)
	if !ok {
		a.fail(w, http.StatusNotFound, fmt.Sprintf("instance %q: not found", id), "id")
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	synced, rev, err := a.cfg.Index.Status()
	body := map[string]any{"status": "ok", "index": rev, "instances": a.cfg.Index.Len()}
	status := http.StatusOK
	switch {
	case !synced:
		body["status"], status = "starting", http.StatusServiceUnavailable
	case err != nil:
		// /healthz is open even when reads need a token: a store's
		// reason is shown, its cause (endpoints, keys) is in the log.
		msg := err.Error()
		if r := registry.UnavailableReason(err); r != "" {
			msg = r + ": " + registry.ErrUnavailable.Error()
		}
		body["status"], body["error"], status = "degraded", msg, http.StatusServiceUnavailable
	}
	for name, info := range a.cfg.HealthInfo {
		body[name] = info()
	}
	for name, check := range a.cfg.HealthChecks {
		body[name] = "ok"
		if err := check(); err != nil {
			body[name] = err.Error()
			if status == http.StatusOK {
				body["status"], status = "degraded", http.StatusServiceUnavailable
			}
		}
	}
	writeJSON(w, status, body)
}

// watch streams server-sent events: each time a service changes, its whole
// current instance list. ?index=N starts after revision N (0: everything
// now, as a first snapshot); ?service=NAME limits the stream to one service.
// When the index no longer remembers every removal after N, or N is one
// it has not reached, an `event: reset` naming the services that exist
// comes first.
func (a *API) watch(w http.ResponseWriter, r *http.Request) {
	index, _, err := blocking(r)
	if err != nil {
		a.fail(w, http.StatusBadRequest, err.Error(), "")
		return
	}
	only := ""
	if v := r.URL.Query().Get("service"); v != "" {
		if only, _, err = registry.ParseServiceName(v); err != nil {
			a.failErr(w, err)
			return
		}
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		a.fail(w, http.StatusInternalServerError, "streaming not supported by this connection", "")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	ix := a.cfg.Index
	rev := index
	// An index this server has not reached: another server's, a moment
	// ahead (etcd's revisions are shared), or one from before this
	// server's store was replaced, which it may never reach. Wait a
	// little for it, then send the whole state as a reset.
	future := false
	if index > ix.Rev() {
		ctx, cancel := context.WithTimeout(r.Context(), futureIndexWait)
		future = ix.WaitRev(ctx, index) != nil
		cancel()
		if r.Context().Err() != nil {
			return
		}
	}
	// sent is the revision of each service's last event on this stream: a
	// service's snapshot is taken after ChangedSince, so it may already
	// hold a change past cur, which the next round would send again.
	sent := map[string]int64{}
	for {
		changed, cur, reset := ix.ChangedSince(rev)
		if future {
			changed, cur, _ = ix.ChangedSince(0)
			reset, future = true, false
		}
		if reset {
			clear(sent) // every service is sent again
			// The index forgot removals after rev: say so, with every
			// service there is, so that the client drops the others.
			live := changed
			if only != "" {
				live = nil
				if slices.Contains(changed, only) {
					live = []string{only}
				}
			}
			if err := writeReset(w, cur, live); err != nil {
				return
			}
		}
		for _, svc := range changed {
			if only != "" && svc != only {
				continue
			}
			sn := a.snaps.forService(svc)
			if sn.err != nil {
				return
			}
			if last, ok := sent[svc]; ok && sn.rev == last {
				continue // sent already, by the round before
			}
			if err := sn.writeEvent(w); err != nil {
				return
			}
			sent[svc] = sn.rev
		}
		fl.Flush()
		rev = cur
		// Wait for the next change; after 15 quiet seconds send a comment
		// so that proxies keep the stream open.
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		next := ix.WaitAny(ctx, rev)
		cancel()
		if r.Context().Err() != nil {
			return
		}
		if next <= rev {
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
	}
}

// futureIndexWait is how long a watch from an index the server has not
// reached waits for it before it sends the whole state as a reset.
const futureIndexWait = 2 * time.Second

// writeReset writes the reset event of a watch: the services that exist
// at rev (apiclient.WatchReset).
func writeReset(w io.Writer, rev int64, services []string) error {
	if services == nil {
		services = []string{}
	}
	data, err := json.Marshal(apiclient.WatchReset{Index: rev, Services: services})
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "id: %d\nevent: reset\ndata: %s\n\n", rev, data)
	return err
}
