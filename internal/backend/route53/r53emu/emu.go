// Package r53emu is an emulator of the Amazon Route 53 API, for tests. It
// is NOT AWS: it is a stand-in, written because AWS cannot be reached from
// the project's tests, and it is strict on purpose.
//
// It is an HTTP server on 127.0.0.1 that speaks the REST/XML subset of the
// Route 53 API (version 2013-04-01) that signpost's Route 53 backend and
// checker use, as aws-sdk-go-v2 sends it: ListHostedZonesByName,
// ListHostedZones, GetHostedZone, ListResourceRecordSets (paged the way
// Route 53 pages, at most 300 record sets a page), ChangeResourceRecordSets
// and GetChange. Point the SDK at it with its endpoint override
// (route53.Options.BaseEndpoint).
//
// Strict where AWS is strict: a change batch is applied whole or not at
// all; a CREATE of an existing record set, a DELETE that does not match
// the current record set exactly (TTL, weight and every value), a weighted
// set beside a non-weighted one, a name outside the zone or a malformed
// value fail the whole batch with InvalidChangeBatch in AWS's XML form;
// more than 1,000 records or 32,000 characters of values in a request is
// refused, an UPSERT counting twice; SetIdentifier and Weight must come
// together; requests must be SigV4-signed. What it does not model (alias
// targets, other routing policies, health checks, SOA/NS changes) it
// refuses with InvalidInput rather than accept quietly. Where its messages
// differ in wording from AWS's, the codes and the rules are what tests may
// rely on.
//
// For tests it also injects errors (Throttling, PriorRequestNotComplete,
// 5xx) into the next N calls, can enforce an account rate limit of its own,
// and logs every request with its time so that tests can assert a client's
// request rate. It does not answer DNS: tests read records through the API
// or Records.
package r53emu

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limits Route 53 enforces, which the emulator enforces too.
const (
	// MaxRecordsPerRequest is the most ResourceRecord elements one
	// ChangeResourceRecordSets request may carry (an UPSERT counts twice).
	MaxRecordsPerRequest = 1000
	// MaxValueCharsPerRequest is the most characters of Value elements one
	// request may carry (an UPSERT counts twice).
	MaxValueCharsPerRequest = 32000
	// MaxListItems is the most record sets one ListResourceRecordSets page
	// holds, whatever maxitems asks for.
	MaxListItems = 300
	// MaxZoneItems is the most hosted zones one ListHostedZones(ByName)
	// page holds.
	MaxZoneItems = 100
	// MaxSetIdentifier is the longest SetIdentifier.
	MaxSetIdentifier = 128
	// MaxWeight is the largest routing weight.
	MaxWeight = 255
)

// Operation names, as logged in Request.Op and accepted by FailNext.
const (
	OpListHostedZonesByName    = "ListHostedZonesByName"
	OpListHostedZones          = "ListHostedZones"
	OpGetHostedZone            = "GetHostedZone"
	OpListResourceRecordSets   = "ListResourceRecordSets"
	OpChangeResourceRecordSets = "ChangeResourceRecordSets"
	OpGetChange                = "GetChange"
)

// Error codes the emulator answers with.
const (
	CodeThrottling              = "Throttling"
	CodePriorRequestNotComplete = "PriorRequestNotComplete"
	CodeInvalidChangeBatch      = "InvalidChangeBatch"
	CodeInvalidInput            = "InvalidInput"
	CodeNoSuchHostedZone        = "NoSuchHostedZone"
	CodeNoSuchChange            = "NoSuchChange"
	CodeInternalError           = "InternalError"
	CodeServiceUnavailable      = "ServiceUnavailable"
)

// Zone describes a hosted zone to create with AddZone.
type Zone struct {
	// ID is the zone's id without "/hostedzone/"; empty picks one.
	ID string
	// Name is the zone's domain name ("servicediscovery.internal").
	Name string
	// Private makes it a private hosted zone (with one VPC).
	Private bool
	// LinkedService names the service that owns the zone
	// ("servicediscovery.amazonaws.com" for a Cloud Map namespace).
	LinkedService string
	Comment       string
}

// RecordSet is one resource record set as the emulator holds it: Name in
// lower case with a trailing dot, SetIdentifier empty for a non-weighted
// set.
type RecordSet struct {
	Name          string
	Type          string
	SetIdentifier string
	Weight        *int64
	TTL           int64
	Values        []string
}

// Request is one logged API request.
type Request struct {
	At     time.Time
	Op     string
	Status int
	// Code is the error code answered, "" for success.
	Code string
	// Records is, for ChangeResourceRecordSets, the request's record count
	// as AWS counts it (UPSERT twice).
	Records int
	// Changes is, for ChangeResourceRecordSets, the batch as sent (whether
	// or not it was applied).
	Changes []Change
}

// Change is one change of a ChangeResourceRecordSets batch, as sent.
type Change struct {
	Action string // CREATE, UPSERT or DELETE
	RecordSet
}

type zone struct {
	Zone
	records map[string]*RecordSet
}

type change struct {
	id        string
	comment   *string
	submitted time.Time
}

type injected struct {
	op         string
	code       string
	n          int
	afterApply bool
}

// Server is a running emulator. Its methods are safe for concurrent use.
type Server struct {
	log  *slog.Logger
	ln   net.Listener
	http *http.Server

	mu        sync.Mutex
	zones     map[string]*zone
	zoneOrder []string
	changes   map[string]*change
	seq       int
	inject    []injected
	requests  []Request
	limiter   *rate.Limiter
	inSync    time.Duration
	loopPages int
}

// Start starts an emulator on a free port of 127.0.0.1. Close stops it.
func Start() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("r53emu: listen on 127.0.0.1: %w", err)
	}
	s := &Server{
		log:     slog.Default().With("component", "r53emu"),
		ln:      ln,
		zones:   map[string]*zone{},
		changes: map[string]*change{},
	}
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "err", err)
		}
	}()
	return s, nil
}

// URL is the base endpoint to give the SDK ("http://127.0.0.1:port").
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.http.Shutdown(ctx)
}

// AddZone creates a hosted zone with its apex SOA and NS record sets and
// returns its id (without "/hostedzone/").
func (s *Server) AddZone(z Zone) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	if z.ID == "" {
		z.ID = fmt.Sprintf("Z%05dEMULATOR", s.seq)
	}
	z.Name = canonical(z.Name)
	zz := &zone{Zone: z, records: map[string]*RecordSet{}}
	soa := &RecordSet{Name: z.Name, Type: "SOA", TTL: 900,
		Values: []string{"ns-1.emulator.invalid. hostmaster.emulator.invalid. 1 7200 900 1209600 86400"}}
	ns := &RecordSet{Name: z.Name, Type: "NS", TTL: 172800, Values: []string{"ns-1.emulator.invalid."}}
	zz.records[key(soa.Name, soa.Type, "")] = soa
	zz.records[key(ns.Name, ns.Type, "")] = ns
	s.zones[z.ID] = zz
	s.zoneOrder = append(s.zoneOrder, z.ID)
	return z.ID
}

// Records returns a copy of a zone's record sets in Route 53's list order.
func (s *Server) Records(zoneID string) []RecordSet {
	s.mu.Lock()
	defer s.mu.Unlock()
	z := s.zones[zoneID]
	if z == nil {
		return nil
	}
	list := sortedRecords(z)
	out := make([]RecordSet, len(list))
	for i, r := range list {
		out[i] = r.clone()
	}
	return out
}

// Seed puts record sets straight into a zone, bypassing the API and its
// validation (for setting up other hosts' records and large zones).
func (s *Server) Seed(zoneID string, sets ...RecordSet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	z := s.zones[zoneID]
	if z == nil {
		return fmt.Errorf("r53emu: no zone %q", zoneID)
	}
	for _, r := range sets {
		r.Name = canonical(r.Name)
		r.Type = strings.ToUpper(r.Type)
		c := r.clone()
		z.records[key(c.Name, c.Type, c.SetIdentifier)] = &c
	}
	return nil
}

// FailNext makes the next n requests of operation op ("" for any) fail
// with code (CodeThrottling, CodePriorRequestNotComplete,
// CodeInternalError, CodeServiceUnavailable, or any other) without being
// applied.
func (s *Server) FailNext(op, code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inject = append(s.inject, injected{op: op, code: code, n: n})
}

// FailNextAfterApply makes the next n ChangeResourceRecordSets requests be
// applied and then answered with code, as when a response is lost: a
// client that retries blindly then sees its own change.
func (s *Server) FailNextAfterApply(code string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inject = append(s.inject, injected{op: OpChangeResourceRecordSets, code: code, n: n, afterApply: true})
}

// ClearInjected drops every error still to be injected, and any looping
// page still to be answered.
func (s *Server) ClearInjected() {
	s.mu.Lock()
	s.inject = nil
	s.loopPages = 0
	s.mu.Unlock()
}

// LoopPages makes the next n truncated ListResourceRecordSets and
// ListHostedZonesByName pages that were asked for from a page token give
// that same token again as the next one, as a broken or hostile endpoint
// might: a client that follows tokens blindly loops for ever.
func (s *Server) LoopPages(n int) {
	s.mu.Lock()
	s.loopPages = n
	s.mu.Unlock()
}

// SetRateLimit makes the emulator answer Throttling beyond r requests a
// second with the given burst, as AWS does per account. r <= 0 removes
// the limit.
func (s *Server) SetRateLimit(r float64, burst int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r <= 0 {
		s.limiter = nil
		return
	}
	s.limiter = rate.NewLimiter(rate.Limit(r), max(burst, 1))
}

// SetInSyncAfter sets how long a change stays PENDING in GetChange
// (default 0: INSYNC at the first GetChange).
func (s *Server) SetInSyncAfter(d time.Duration) {
	s.mu.Lock()
	s.inSync = d
	s.mu.Unlock()
}

// Requests returns a copy of the request log.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ResetRequests clears the request log.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	s.requests = nil
	s.mu.Unlock()
}

// Count returns how many logged requests were of operation op ("" for
// all).
func (s *Server) Count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.requests {
		if op == "" || r.Op == op {
			n++
		}
	}
	return n
}

// MaxInWindow returns the largest number of logged requests that fell in
// any window of length w: the peak request rate a client reached.
func (s *Server) MaxInWindow(w time.Duration) int {
	reqs := s.Requests()
	best := 0
	j := 0
	for i := range reqs {
		for reqs[i].At.Sub(reqs[j].At) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

func (r *RecordSet) clone() RecordSet {
	c := *r
	c.Values = append([]string(nil), r.Values...)
	if r.Weight != nil {
		w := *r.Weight
		c.Weight = &w
	}
	return c
}

func key(name, typ, setID string) string { return name + "|" + typ + "|" + setID }

// canonical lower-cases a domain name and gives it a trailing dot.
func canonical(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// reversed returns a name's labels right to left, for Route 53's order.
func reversed(name string) string {
	labels := strings.Split(strings.TrimSuffix(name, "."), ".")
	for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
		labels[i], labels[j] = labels[j], labels[i]
	}
	return strings.Join(labels, ".")
}

// compareSets orders record sets as ListResourceRecordSets does: by name
// with its labels reversed, then type, then set identifier.
func compareSets(aName, aType, aID, bName, bType, bID string) int {
	if c := strings.Compare(reversed(aName), reversed(bName)); c != 0 {
		return c
	}
	if c := strings.Compare(aType, bType); c != 0 {
		return c
	}
	return strings.Compare(aID, bID)
}

func sortedRecords(z *zone) []*RecordSet {
	list := make([]*RecordSet, 0, len(z.records))
	for _, r := range z.records {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		return compareSets(a.Name, a.Type, a.SetIdentifier, b.Name, b.Type, b.SetIdentifier) < 0
	})
	return list
}

// apiError is an error answer.
type apiError struct {
	status   int
	code     string
	message  string
	messages []string // InvalidChangeBatch
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func statusOf(code string) int {
	switch code {
	case CodeNoSuchHostedZone, CodeNoSuchChange:
		return http.StatusNotFound
	case CodeInternalError:
		return http.StatusInternalServerError
	case CodeServiceUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

func errorf(code, format string, args ...any) *apiError {
	return &apiError{status: statusOf(code), code: code, message: fmt.Sprintf(format, args...)}
}

func messageOf(code string) string {
	switch code {
	case CodeThrottling:
		return "Rate exceeded"
	case CodePriorRequestNotComplete:
		return "The request was rejected because Route 53 was still processing a prior request."
	case CodeInternalError:
		return "An internal error occurred (emulated)."
	case CodeServiceUnavailable:
		return "Service unavailable (emulated)."
	}
	return "Injected error " + code + " (emulated)."
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op, args := route(r)
	s.mu.Lock()
	s.seq++
	reqID := fmt.Sprintf("emu-%08d", s.seq)
	entry := Request{At: time.Now(), Op: op}
	var resp any
	var aerr *apiError
	var after *injected
	switch {
	case op == "":
		aerr = &apiError{status: http.StatusNotFound, code: "UnknownOperation",
			message: fmt.Sprintf("r53emu: %s %s is not an operation this emulator models", r.Method, r.URL.Path)}
	case !signed(r):
		aerr = &apiError{status: http.StatusForbidden, code: "MissingAuthenticationToken",
			message: "Request is missing a SigV4 Authorization header for service route53"}
	default:
		if inj := s.takeInjected(op); inj != nil {
			if inj.afterApply {
				after = inj
			} else {
				aerr = errorf(inj.code, "%s", messageOf(inj.code))
			}
		} else if s.limiter != nil && !s.limiter.Allow() {
			aerr = errorf(CodeThrottling, "Rate exceeded")
		}
	}
	if aerr == nil {
		resp, aerr = s.dispatch(r, op, args, &entry)
		if aerr == nil && after != nil {
			aerr = errorf(after.code, "%s", messageOf(after.code))
		}
	}
	if aerr != nil {
		entry.Status, entry.Code = aerr.status, aerr.code
	} else {
		entry.Status = http.StatusOK
	}
	s.requests = append(s.requests, entry)
	s.mu.Unlock()

	w.Header().Set("x-amzn-RequestId", reqID)
	w.Header().Set("Content-Type", "text/xml")
	if aerr != nil {
		w.WriteHeader(aerr.status)
		if aerr.code == CodeInvalidChangeBatch {
			writeXML(w, xmlInvalidChangeBatch{Messages: aerr.messages, RequestID: reqID})
			return
		}
		typ := "Sender"
		if aerr.status >= 500 {
			typ = "Receiver"
		}
		writeXML(w, xmlErrorResponse{Error: xmlError{Type: typ, Code: aerr.code, Message: aerr.message}, RequestID: reqID})
		return
	}
	w.WriteHeader(http.StatusOK)
	writeXML(w, resp)
}

func writeXML(w http.ResponseWriter, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		b = []byte("<ErrorResponse/>")
	}
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(b)
}

// signed reports whether the request carries a SigV4 signature for
// route53. The signature itself is not checked.
func signed(r *http.Request) bool {
	a := r.Header.Get("Authorization")
	return strings.HasPrefix(a, "AWS4-HMAC-SHA256 ") && strings.Contains(a, "/route53/aws4_request")
}

// route maps a request to an operation and its path arguments.
func route(r *http.Request) (string, []string) {
	p := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/2013-04-01/"), "/")
	if p == r.URL.Path {
		return "", nil
	}
	parts := strings.Split(p, "/")
	switch {
	case r.Method == http.MethodGet && p == "hostedzonesbyname":
		return OpListHostedZonesByName, nil
	case r.Method == http.MethodGet && p == "hostedzone":
		return OpListHostedZones, nil
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "hostedzone":
		return OpGetHostedZone, parts[1:]
	case r.Method == http.MethodGet && len(parts) == 3 && parts[0] == "hostedzone" && parts[2] == "rrset":
		return OpListResourceRecordSets, parts[1:2]
	case r.Method == http.MethodPost && len(parts) == 3 && parts[0] == "hostedzone" && parts[2] == "rrset":
		return OpChangeResourceRecordSets, parts[1:2]
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "change":
		return OpGetChange, parts[1:]
	}
	return "", nil
}

func (s *Server) takeInjected(op string) *injected {
	for i := range s.inject {
		in := &s.inject[i]
		if in.n > 0 && (in.op == "" || in.op == op) {
			in.n--
			c := *in
			if in.n == 0 {
				s.inject = append(s.inject[:i], s.inject[i+1:]...)
			}
			return &c
		}
	}
	return nil
}

func (s *Server) dispatch(r *http.Request, op string, args []string, entry *Request) (any, *apiError) {
	switch op {
	case OpListHostedZonesByName:
		return s.listZonesByName(r)
	case OpListHostedZones:
		return s.listZones(r)
	case OpGetHostedZone:
		return s.getZone(args[0])
	case OpListResourceRecordSets:
		return s.listRecords(r, args[0])
	case OpChangeResourceRecordSets:
		return s.changeRecords(r, args[0], entry)
	case OpGetChange:
		return s.getChange(args[0])
	}
	return nil, errorf(CodeInvalidInput, "unknown operation %s", op)
}

func (s *Server) zoneXML(z *zone) xmlHostedZone {
	hz := xmlHostedZone{
		ID:                     "/hostedzone/" + z.ID,
		Name:                   z.Name,
		CallerReference:        "emulator-" + z.ID,
		Config:                 xmlZoneConfig{PrivateZone: z.Private},
		ResourceRecordSetCount: int64(len(z.records)),
	}
	if z.Comment != "" {
		c := z.Comment
		hz.Config.Comment = &c
	}
	if z.LinkedService != "" {
		hz.LinkedService = &xmlLinkedService{ServicePrincipal: z.LinkedService}
	}
	return hz
}

func maxItems(r *http.Request, def, limit int) (int, *apiError) {
	v := r.URL.Query().Get("maxitems")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, errorf(CodeInvalidInput, "1 validation error detected: Value '%s' at 'maxItems' failed to satisfy constraint: Member must be a positive integer", v)
	}
	return min(n, limit), nil
}

func (s *Server) listZonesByName(r *http.Request) (any, *apiError) {
	q := r.URL.Query()
	n, aerr := maxItems(r, MaxZoneItems, MaxZoneItems)
	if aerr != nil {
		return nil, aerr
	}
	dnsName, startID := q.Get("dnsname"), q.Get("hostedzoneid")
	if startID != "" && dnsName == "" {
		return nil, errorf(CodeInvalidInput, "The input is not valid: hostedzoneid requires dnsname")
	}
	zones := make([]*zone, 0, len(s.zones))
	for _, z := range s.zones {
		zones = append(zones, z)
	}
	sort.Slice(zones, func(i, j int) bool {
		if c := strings.Compare(reversed(zones[i].Name), reversed(zones[j].Name)); c != 0 {
			return c < 0
		}
		return zones[i].ID < zones[j].ID
	})
	resp := xmlListZonesByNameResponse{MaxItems: strconv.Itoa(n)}
	if dnsName != "" {
		resp.DNSName = &dnsName
	}
	if startID != "" {
		resp.HostedZoneID = &startID
	}
	start := canonical(dnsName)
	for _, z := range zones {
		if dnsName != "" {
			c := strings.Compare(reversed(z.Name), reversed(start))
			if c < 0 || (c == 0 && startID != "" && z.ID < startID) {
				continue
			}
		}
		if len(resp.HostedZones) == n {
			resp.IsTruncated = true
			name, id := z.Name, z.ID
			if startID != "" && s.loopPages > 0 {
				s.loopPages-- // injected: point back at this very page
				name, id = dnsName, startID
			}
			resp.NextDNSName, resp.NextHostedZoneID = &name, &id
			break
		}
		resp.HostedZones = append(resp.HostedZones, s.zoneXML(z))
	}
	return resp, nil
}

func (s *Server) listZones(r *http.Request) (any, *apiError) {
	n, aerr := maxItems(r, MaxZoneItems, MaxZoneItems)
	if aerr != nil {
		return nil, aerr
	}
	marker := r.URL.Query().Get("marker")
	resp := xmlListZonesResponse{Marker: marker, MaxItems: strconv.Itoa(n)}
	started := marker == ""
	for _, id := range s.zoneOrder {
		if !started {
			if id != marker {
				continue
			}
			started = true
		}
		if len(resp.HostedZones) == n {
			resp.IsTruncated = true
			next := id
			resp.NextMarker = &next
			break
		}
		resp.HostedZones = append(resp.HostedZones, s.zoneXML(s.zones[id]))
	}
	if !started {
		return nil, errorf(CodeInvalidInput, "The marker %q is not a hosted zone id", marker)
	}
	return resp, nil
}

func (s *Server) zone(id string) (*zone, *apiError) {
	id = strings.TrimPrefix(id, "/hostedzone/")
	z := s.zones[id]
	if z == nil {
		return nil, errorf(CodeNoSuchHostedZone, "No hosted zone found with ID: %s", id)
	}
	return z, nil
}

func (s *Server) getZone(id string) (any, *apiError) {
	z, aerr := s.zone(id)
	if aerr != nil {
		return nil, aerr
	}
	resp := xmlGetZoneResponse{HostedZone: s.zoneXML(z)}
	if z.Private {
		resp.VPCs = []xmlVPC{{VPCRegion: "us-east-1", VPCID: "vpc-emulator"}}
	}
	return resp, nil
}

func toXML(r *RecordSet) xmlRecordSet {
	x := xmlRecordSet{Name: r.Name, Type: r.Type, Weight: r.Weight, ResourceRecords: &xmlRecords{}}
	if r.SetIdentifier != "" {
		id := r.SetIdentifier
		x.SetIdentifier = &id
	}
	ttl := r.TTL
	x.TTL = &ttl
	for _, v := range r.Values {
		x.ResourceRecords.Records = append(x.ResourceRecords.Records, xmlRecord{Value: v})
	}
	return x
}

func (s *Server) listRecords(r *http.Request, id string) (any, *apiError) {
	z, aerr := s.zone(id)
	if aerr != nil {
		return nil, aerr
	}
	n, aerr := maxItems(r, MaxListItems, MaxListItems)
	if aerr != nil {
		return nil, aerr
	}
	q := r.URL.Query()
	name, typ, ident := q.Get("name"), q.Get("type"), q.Get("identifier")
	if typ != "" && name == "" {
		return nil, errorf(CodeInvalidInput, "The input is not valid: type requires name")
	}
	if ident != "" && typ == "" {
		return nil, errorf(CodeInvalidInput, "The input is not valid: identifier requires name and type")
	}
	if typ != "" && !knownType(typ) {
		return nil, errorf(CodeInvalidInput, "Invalid type %q", typ)
	}
	if name != "" {
		name = canonical(name)
	}
	resp := xmlListRecordsResponse{MaxItems: strconv.Itoa(n)}
	for _, rs := range sortedRecords(z) {
		if name != "" {
			c := strings.Compare(reversed(rs.Name), reversed(name))
			if c < 0 {
				continue
			}
			if c == 0 && typ != "" {
				if t := strings.Compare(rs.Type, typ); t < 0 || (t == 0 && rs.SetIdentifier < ident) {
					continue
				}
			}
		}
		if len(resp.ResourceRecordSets) == n {
			resp.IsTruncated = true
			nn, nt, ni := rs.Name, rs.Type, rs.SetIdentifier
			if name != "" && s.loopPages > 0 {
				s.loopPages-- // injected: point back at this very page
				nn, nt, ni = name, typ, ident
			}
			resp.NextRecordName, resp.NextRecordType = &nn, &nt
			if ni != "" {
				resp.NextRecordIdentifier = &ni
			}
			break
		}
		resp.ResourceRecordSets = append(resp.ResourceRecordSets, toXML(rs))
	}
	return resp, nil
}

func (s *Server) getChange(id string) (any, *apiError) {
	id = strings.TrimPrefix(id, "/change/")
	c := s.changes[id]
	if c == nil {
		return nil, errorf(CodeNoSuchChange, "A change with the specified change ID does not exist: %s", id)
	}
	status := "PENDING"
	if time.Since(c.submitted) >= s.inSync {
		status = "INSYNC"
	}
	return c.response("GetChangeResponse", status), nil
}

func (s *Server) changeRecords(r *http.Request, id string, entry *Request) (any, *apiError) {
	z, aerr := s.zone(id)
	if aerr != nil {
		return nil, aerr
	}
	var req xmlChangeRequest
	dec := xml.NewDecoder(http.MaxBytesReader(nil, r.Body, 4<<20))
	if err := dec.Decode(&req); err != nil {
		return nil, errorf(CodeInvalidInput, "Could not parse the request body as a ChangeResourceRecordSetsRequest: %v", err)
	}
	for _, c := range req.ChangeBatch.Changes {
		rs := c.ResourceRecordSet
		ch := Change{Action: c.Action, RecordSet: RecordSet{Name: canonical(rs.Name), Type: rs.Type, Weight: rs.Weight}}
		if rs.SetIdentifier != nil {
			ch.SetIdentifier = *rs.SetIdentifier
		}
		if rs.TTL != nil {
			ch.TTL = *rs.TTL
		}
		if rs.ResourceRecords != nil {
			for _, v := range rs.ResourceRecords.Records {
				ch.Values = append(ch.Values, v.Value)
			}
		}
		entry.Changes = append(entry.Changes, ch)
	}
	records, aerr := applyBatch(z, req.ChangeBatch)
	entry.Records = records
	if aerr != nil {
		return nil, aerr
	}
	s.seq++
	c := &change{id: fmt.Sprintf("C%08dEMU", s.seq), comment: req.ChangeBatch.Comment, submitted: time.Now()}
	s.changes[c.id] = c
	return c.response("ChangeResourceRecordSetsResponse", "PENDING"), nil
}

func (c *change) response(root, status string) xmlChangeResponse {
	return xmlChangeResponse{XMLName: xml.Name{Space: Namespace, Local: root}, ChangeInfo: xmlChangeInfo{
		ID: "/change/" + c.id, Status: status, SubmittedAt: c.submitted.UTC().Format(time.RFC3339), Comment: c.comment}}
}
