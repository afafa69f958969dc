package ir

import (
	"strings"
	"testing"
)

// TestRateLimitShapeCaps: the exact boundaries of the one check both the rate-limit service
// (per request) and translation (per route) run.
func TestRateLimitShapeCaps(t *testing.T) {
	entries := func(n int) func(int) int { return func(int) int { return n } }
	if e := CheckRateLimitShape(MaxRateLimitDescriptors, entries(MaxRateLimitEntries)); e != nil {
		t.Fatalf("at both caps: %v", e)
	}
	if e := CheckRateLimitShape(MaxRateLimitDescriptors+1, entries(1)); e == nil || e.Descriptor != -1 || e.Descriptors != 65 {
		t.Fatalf("one descriptor past: %+v", e)
	}
	if e := CheckRateLimitShape(1_000_000, func(int) int { t.Fatal("entries read past the descriptor cap"); return 0 }); e == nil {
		t.Fatal("a million descriptors")
	}
	if e := CheckRateLimitShape(3, func(i int) int { return []int{1, MaxRateLimitEntries + 1, 1}[i] }); e == nil || e.Descriptor != 1 || e.Entries != 33 {
		t.Fatalf("one entry past: %+v", e)
	}
}

// TestRouteValidateRefusesRateLimitsPastTheCap: a route whose rate limits make a request the
// service would refuse does not validate (translation leaves it out), and says which cap.
func TestRouteValidateRefusesRateLimitsPastTheCap(t *testing.T) {
	rl := RateLimit{Entries: []RateLimitEntry{{Kind: RateLimitRemoteAddress, DescriptorKey: "remote_address"}}}
	route := func(n int) *Route {
		r := &Route{Name: "r", RouteID: "r", Match: Match{PathKind: PathPrefix, Path: "/"},
			Backends: []Backend{{Cluster: "c", Weight: 1}}}
		for i := 0; i < n; i++ {
			r.RateLimits = append(r.RateLimits, rl)
		}
		return r
	}
	if err := route(MaxRateLimitDescriptors).Validate(); err != nil {
		t.Fatalf("at the cap: %v", err)
	}
	for _, n := range []int{MaxRateLimitDescriptors + 1, 10_000} {
		if err := route(n).Validate(); err == nil || !strings.Contains(err.Error(), "rate_limits:") {
			t.Fatalf("%d rate limits: %v", n, err)
		}
	}
	wide := route(1)
	for i := 0; i < MaxRateLimitEntries+1; i++ {
		wide.RateLimits[0].Entries = append(wide.RateLimits[0].Entries, rl.Entries[0])
	}
	if err := wide.Validate(); err == nil || !strings.Contains(err.Error(), "rate_limits[0]: 34 entries") {
		t.Fatalf("a rate limit of 34 entries: %v", err)
	}
}
