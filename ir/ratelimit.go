package ir

import (
	"fmt"
	"time"
)

// RateLimit is one Envoy route rate limit: the actions that build one descriptor, in order.
// The xDS builders turn it into a route.v3.RateLimit; the rate-limit service rules for the
// same descriptor come from the same translation (translate.GeneratedDomain).
type RateLimit struct {
	Entries []RateLimitEntry
}

// RateLimitEntryKind selects the Envoy rate-limit action that produces an entry.
type RateLimitEntryKind string

// Entry kinds.
const (
	// RateLimitGenericKey: generic_key{descriptor_key: DescriptorKey, descriptor_value: Value}.
	RateLimitGenericKey RateLimitEntryKind = "generic_key"
	// RateLimitRemoteAddress: remote_address{} (descriptor key "remote_address", value the client IP).
	RateLimitRemoteAddress RateLimitEntryKind = "remote_address"
	// RateLimitMetadata: metadata{descriptor_key: DescriptorKey, source: DYNAMIC, metadata_key:
	// {key: "envoy.filters.http.ext_authz", path: [{key: MetadataKey}]}}.
	RateLimitMetadata RateLimitEntryKind = "metadata"
	// RateLimitRequestHeader: request_headers{header_name: Header, descriptor_key: DescriptorKey}.
	RateLimitRequestHeader RateLimitEntryKind = "request_header"
)

// RateLimitMetadataNamespace is the dynamic metadata namespace of metadata entries.
const RateLimitMetadataNamespace = "envoy.filters.http.ext_authz"

// RateLimitEntry is one descriptor entry.
type RateLimitEntry struct {
	Kind          RateLimitEntryKind
	DescriptorKey string
	Value         string // generic_key only
	MetadataKey   string // metadata only: user_id, api_key_id, tenant_id
	Header        string // request_header only
}

// Validate checks that the entry has what its kind needs.
func (e RateLimitEntry) Validate() error {
	switch e.Kind {
	case RateLimitGenericKey:
		if e.DescriptorKey == "" || e.Value == "" {
			return fmt.Errorf("generic_key entry needs a descriptor key and a value")
		}
	case RateLimitRemoteAddress:
	case RateLimitMetadata:
		if e.DescriptorKey == "" || e.MetadataKey == "" {
			return fmt.Errorf("metadata entry needs a descriptor key and a metadata key")
		}
	case RateLimitRequestHeader:
		if e.DescriptorKey == "" || e.Header == "" {
			return fmt.Errorf("request_header entry needs a descriptor key and a header")
		}
	default:
		return fmt.Errorf("unknown rate-limit entry kind %q", e.Kind)
	}
	return nil
}

// Validate checks every entry.
func (r RateLimit) Validate() error {
	if len(r.Entries) == 0 {
		return fmt.Errorf("rate limit has no entries")
	}
	for i, e := range r.Entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("entries[%d]: %w", i, err)
		}
	}
	return nil
}

// RateLimitDomain is the rate-limit service's configuration of one domain: a descriptor tree
// with envoyproxy/ratelimit's matching semantics.
type RateLimitDomain struct {
	Name        string
	Descriptors []RateLimitDescriptor
}

// RateLimitDescriptor is one node of a domain's tree. Value "" matches any value of Key;
// a Value ending in "*" matches values with that prefix.
type RateLimitDescriptor struct {
	Key   string
	Value string
	// Limits apply when a request descriptor ends at this node. All must admit a request;
	// a denied request consumes none of them. Empty with Unlimited false: no limit here.
	Limits         []RateLimitRule
	Unlimited      bool
	Name           string   // the limit's name, for Replaces
	Replaces       []string // names of limits this one replaces in the same request
	ShadowMode     bool     // count and report, never deny
	QuotaMode      bool     // envoyproxy/ratelimit quota_mode: report over-limit as OK
	DetailedMetric bool     // metric label carries values, not only keys
	ValueToMetric  bool
	ShareThreshold bool // a wildcard node's matches share one counter
	// FailMode when the counter store is down: "open" or "closed".
	FailMode string
	Headers  RateLimitHeaders
	// Source names the object the node came from ("rate-limits/<id>").
	Source      string
	Descriptors []RateLimitDescriptor
}

// RateLimitAlgorithm names a counting algorithm.
type RateLimitAlgorithm string

// Algorithms.
const (
	FixedWindow   RateLimitAlgorithm = "fixed_window"
	SlidingWindow RateLimitAlgorithm = "sliding_window"
	TokenBucket   RateLimitAlgorithm = "token_bucket"
	LeakyBucket   RateLimitAlgorithm = "leaky_bucket"
)

// RateLimitCalendar aligns fixed windows to UTC calendar days or months.
type RateLimitCalendar string

// Calendars.
const (
	CalendarNone  RateLimitCalendar = ""
	CalendarDay   RateLimitCalendar = "day"
	CalendarMonth RateLimitCalendar = "month"
)

// RateLimitRule is one counted limit: Requests per Period with Algorithm.
type RateLimitRule struct {
	// Kind tells the role of the rule: "limit", "spike_arrest", "quota_day", "quota_month".
	Kind      string
	Algorithm RateLimitAlgorithm
	Requests  uint64
	Period    time.Duration
	// Calendar: fixed windows on UTC days/months (Period is ignored).
	Calendar RateLimitCalendar
	// Burst: token_bucket bucket size, leaky_bucket tolerance (requests at once).
	Burst uint64
}

// RateLimitHeaders says which response headers a node's limit produces.
type RateLimitHeaders struct {
	Limit, Remaining, Reset, RetryAfter, IETF bool
}

// Any reports whether any header is on.
func (h RateLimitHeaders) Any() bool {
	return h.Limit || h.Remaining || h.Reset || h.RetryAfter || h.IETF
}

// Validate checks the rule's numbers.
func (r RateLimitRule) Validate() error {
	switch r.Algorithm {
	case FixedWindow, SlidingWindow, TokenBucket, LeakyBucket:
	default:
		return fmt.Errorf("unknown algorithm %q", r.Algorithm)
	}
	if r.Calendar != CalendarNone {
		if r.Algorithm != FixedWindow {
			return fmt.Errorf("calendar windows are fixed windows")
		}
		if r.Calendar != CalendarDay && r.Calendar != CalendarMonth {
			return fmt.Errorf("unknown calendar %q", r.Calendar)
		}
	} else if r.Period < time.Microsecond {
		return fmt.Errorf("period must be positive")
	}
	return nil
}

// Caps on one request to the rate-limit service. The service refuses a request past either
// (gRPC InvalidArgument, before anything is counted), and Envoy then fails open: none of the
// request's limits applies. A route's rate limits become that request (one descriptor per
// rate limit, one entry per action), so translation checks each route against the same caps
// with the same function (CheckRateLimitShape) and leaves out a route past them.
const (
	MaxRateLimitDescriptors = 64
	MaxRateLimitEntries     = 32
)

// RateLimitShapeError says a rate-limit request, or a route's rate limits, go past a cap.
type RateLimitShapeError struct {
	Descriptors int // descriptors of the request
	Descriptor  int // the descriptor with too many entries; -1 when Descriptors is the problem
	Entries     int // entries of that descriptor
}

func (e *RateLimitShapeError) Error() string {
	if e.Descriptor < 0 {
		return fmt.Sprintf("%d descriptors; at most %d are accepted", e.Descriptors, MaxRateLimitDescriptors)
	}
	return fmt.Sprintf("descriptor %d has %d entries; at most %d are accepted", e.Descriptor, e.Entries, MaxRateLimitEntries)
}

// CheckRateLimitShape checks n descriptors, the i-th of entries(i) entries, against the
// caps. The rate-limit service runs it on every request, translation on every route.
func CheckRateLimitShape(n int, entries func(i int) int) *RateLimitShapeError {
	if n > MaxRateLimitDescriptors {
		return &RateLimitShapeError{Descriptors: n, Descriptor: -1}
	}
	for i := 0; i < n; i++ {
		if m := entries(i); m > MaxRateLimitEntries {
			return &RateLimitShapeError{Descriptors: n, Descriptor: i, Entries: m}
		}
	}
	return nil
}

// CheckRouteRateLimits is CheckRateLimitShape over a route's rate limits: the request Envoy
// sends for the route when every action produces its entry (an action that produces
// nothing only shortens it).
func CheckRouteRateLimits(rls []RateLimit) *RateLimitShapeError {
	return CheckRateLimitShape(len(rls), func(i int) int { return len(rls[i].Entries) })
}

// RouteRateLimitsErrorPrefix starts every RouteRateLimitsError: a route error that starts
// with it is a route past the caps.
const RouteRateLimitsErrorPrefix = "rate_limits"

// RouteRateLimitsError words a route's shape error: what is past the cap and what would
// happen if the route were served.
func RouteRateLimitsError(e *RateLimitShapeError) error {
	if e.Descriptor < 0 {
		return fmt.Errorf(RouteRateLimitsErrorPrefix+": %d rate limits apply to this route (its own and the global ones); the rate-limit service enforces at most %d per request and Envoy fails open beyond, so none would limit the route",
			e.Descriptors, MaxRateLimitDescriptors)
	}
	return fmt.Errorf(RouteRateLimitsErrorPrefix+"[%d]: %d entries; the rate-limit service enforces at most %d per descriptor and Envoy fails open beyond, so none would limit the route",
		e.Descriptor, e.Entries, MaxRateLimitEntries)
}
