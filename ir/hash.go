package ir

import (
	"encoding/binary"
	"sort"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Hasher computes stable 64-bit content hashes of IR values (xxhash of a length-prefixed
// encoding of every field, maps in key order). The xDS builders are pure functions of the IR,
// so the hash of an IR value keys the resource built from it: equal hashes, equal resources.
// A test checks that every field of every hashed type changes the hash.
type Hasher struct {
	buf []byte
}

// NewHasher returns a reset hasher.
func NewHasher() *Hasher { return &Hasher{buf: make([]byte, 0, 512)} }

// Reset starts a new hash.
func (h *Hasher) Reset() { h.buf = h.buf[:0] }

// Sum64 is the hash of what was written since the last Reset (the encoding is buffered and
// hashed at once: much faster than feeding a digest 8 bytes at a time).
func (h *Hasher) Sum64() uint64 { return xxhash.Sum64(h.buf) }

// U64 writes an integer.
func (h *Hasher) U64(v uint64) { h.buf = binary.LittleEndian.AppendUint64(h.buf, v) }

// Int writes a signed integer.
func (h *Hasher) Int(v int64) { h.U64(uint64(v)) }

// Dur writes a duration.
func (h *Hasher) Dur(d time.Duration) { h.U64(uint64(d)) }

// Bool writes a boolean.
func (h *Hasher) Bool(b bool) {
	if b {
		h.buf = append(h.buf, 1)
	} else {
		h.buf = append(h.buf, 0)
	}
}

// Str writes a string, length first (so "ab","c" differs from "a","bc").
func (h *Hasher) Str(s string) {
	h.U64(uint64(len(s)))
	h.buf = append(h.buf, s...)
}

// Strs writes a list of strings, length first.
func (h *Hasher) Strs(ss []string) {
	h.U64(uint64(len(ss)))
	for _, s := range ss {
		h.Str(s)
	}
}

// U32s writes a list of integers, length first.
func (h *Hasher) U32s(vs []uint32) {
	h.U64(uint64(len(vs)))
	for _, v := range vs {
		h.U64(uint64(v))
	}
}

// present writes whether an optional part is there.
func (h *Hasher) present(ok bool) bool {
	h.Bool(ok)
	return ok
}

// Route writes every field of a route.
func (h *Hasher) Route(r *Route) {
	h.Str(r.Name)
	h.Str(r.RouteID)
	h.Str(r.Tenant)
	h.Match(&r.Match)
	h.U64(uint64(len(r.Backends)))
	for _, b := range r.Backends {
		h.Str(b.Cluster)
		h.U64(uint64(b.Weight))
	}
	if rd := r.Redirect; h.present(rd != nil) {
		h.Bool(rd.HTTPS)
		h.Str(rd.Host)
		h.Str(rd.Path)
		h.Str(rd.PrefixRewrite)
		h.U64(uint64(rd.Status))
	}
	if d := r.DirectResponse; h.present(d != nil) {
		h.U64(uint64(d.Status))
		h.Str(d.Body)
		h.Str(d.ContentType)
	}
	h.Bool(r.HashSourceIP)
	h.Dur(r.Timeout)
	if rt := r.Retry; h.present(rt != nil) {
		h.U64(uint64(rt.NumRetries))
		h.Strs(rt.RetryOn)
		h.Bool(rt.DefaultRetryOn)
		h.Dur(rt.PerTryTimeout)
		h.Dur(rt.BaseInterval)
		h.Dur(rt.MaxInterval)
		h.U32s(rt.RetriableStatusCodes)
	}
	h.Str(r.PrefixRewrite)
	if rw := r.RegexRewrite; h.present(rw != nil) {
		h.Str(rw.Pattern)
		h.Str(rw.Substitution)
	}
	h.Str(r.HostRewrite)
	h.headerOps(&r.RequestHeaders)
	h.headerOps(&r.ResponseHeaders)
	if s := r.Sticky; h.present(s != nil) {
		h.Str(s.Cookie)
		h.Dur(s.TTL)
		h.Str(s.Path)
	}
	h.Bool(r.Authz.Enabled)
	h.StrMap(r.Authz.ContextExtensions)
	h.Bool(r.Authz.WithBody)
	h.U64(uint64(r.Authz.MaxBodyBytes))
	h.Dur(r.Authz.Timeout)
	h.U64(uint64(len(r.RateLimits)))
	for _, rl := range r.RateLimits {
		h.U64(uint64(len(rl.Entries)))
		for _, e := range rl.Entries {
			h.Str(string(e.Kind))
			h.Str(e.DescriptorKey)
			h.Str(e.Value)
			h.Str(e.MetadataKey)
			h.Str(e.Header)
		}
	}
	h.Strs(r.OwnChecks)
	if m := r.Mirror; h.present(m != nil) {
		h.Str(m.Cluster)
		h.U64(uint64(m.PerMillion))
	}
	if f := r.Fault; h.present(f != nil) {
		h.Dur(f.Delay)
		h.U64(uint64(f.DelayPerMillion))
		h.U64(uint64(f.AbortHTTP))
		h.U64(uint64(f.AbortGRPC))
		h.U64(uint64(f.AbortPerMillion))
	}
}

// Match writes every field of a match.
func (h *Hasher) Match(m *Match) {
	h.Str(string(m.PathKind))
	h.Str(m.Path)
	h.Strs(m.Methods)
	for _, list := range [][]StringMatch{m.Headers, m.Query} {
		h.U64(uint64(len(list)))
		for _, s := range list {
			h.Str(s.Name)
			h.Str(string(s.Kind))
			h.Str(s.Value)
			h.Bool(s.Absent)
			h.Bool(s.Invert)
		}
	}
}

func (h *Hasher) headerOps(o *HeaderOps) {
	h.U64(uint64(len(o.Add)))
	for _, v := range o.Add {
		h.Str(v.Name)
		h.Str(v.Value)
		h.Bool(v.Append)
	}
	h.Strs(o.Remove)
}

// StrMap writes a map in key order.
func (h *Hasher) StrMap(m map[string]string) {
	h.U64(uint64(len(m)))
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Str(k)
		h.Str(m[k])
	}
}

// Cluster writes every field of a cluster; the endpoints only when withEndpoints (an EDS
// cluster's resource does not hold them: they are in its ClusterLoadAssignment).
func (h *Hasher) Cluster(c *Cluster, withEndpoints bool) {
	h.Str(c.Name)
	h.Str(c.RouteID)
	h.Str(c.Service)
	h.U64(uint64(c.Target))
	h.Str(string(c.Discovery))
	h.Str(string(c.LB))
	if h.present(withEndpoints) {
		h.Endpoints(c.Endpoints)
	}
	h.Bool(c.HTTP2)
	h.Bool(c.TLS)
	h.Str(c.SNI)
	h.Str(c.TrustedCAPEM)
	h.Str(c.TrustedCAFile)
	h.U64(uint64(len(c.SANs)))
	for _, s := range c.SANs {
		h.Str(string(s.Kind))
		h.Str(s.Value)
	}
	h.Bool(c.AutoHostSNI)
	h.Bool(c.SkipVerify)
	h.Dur(c.ConnectTimeout)
	if hc := c.HealthCheck; h.present(hc != nil) {
		h.Str(hc.Path)
		h.Dur(hc.Interval)
		h.Dur(hc.Timeout)
		h.U64(uint64(hc.HealthyThreshold))
		h.U64(uint64(hc.UnhealthyThreshold))
		h.U32s(hc.ExpectedStatuses)
	}
	if o := c.Outlier; h.present(o != nil) {
		h.U64(uint64(o.Consecutive5xx))
		h.Dur(o.Interval)
		h.Dur(o.BaseEjectionTime)
		h.U64(uint64(o.MaxEjectionPercent))
	}
	if cb := c.Circuit; h.present(cb != nil) {
		h.U64(uint64(cb.MaxConnections))
		h.U64(uint64(cb.MaxPendingRequests))
		h.U64(uint64(cb.MaxRequests))
		h.U64(uint64(cb.MaxRetries))
	}
}

// Endpoints writes a list of endpoints.
func (h *Hasher) Endpoints(eps []Endpoint) {
	h.U64(uint64(len(eps)))
	for _, e := range eps {
		h.Str(e.Host)
		h.U64(uint64(e.Port))
		h.U64(uint64(e.Weight))
	}
}
