package extauthz

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/model"
)

// referenceIPDecision is the IP decision as ext_authz made it when it read ip-rules from the
// model and gave each route its own copy of every global rule's set: the rules in force at
// build (not expired then), each one set; a route checks the global rules, the rules naming
// it and the route-scoped rules it names; any deny set holding the address denies, then any
// allow set present makes the route an allow list. Written from the model, not the IR.
func referenceIPDecision(snap *model.Snapshot, route *model.Route, built, at time.Time, a netip.Addr) (string, bool) {
	var deny, allow []*ipSet
	setOf := func(r *model.IPRule) *ipSet {
		var exp time.Time
		if r.ExpiresAt != nil {
			exp = *r.ExpiresAt
		}
		s := &ipSet{}
		for _, c := range r.CIDRs {
			_ = s.add(c, exp)
		}
		return s
	}
	inForce := func(r *model.IPRule) bool { return r.ExpiresAt == nil || built.Before(*r.ExpiresAt) }
	use := func(r *model.IPRule) {
		if r.Action == "allow" {
			allow = append(allow, setOf(r))
		} else {
			deny = append(deny, setOf(r))
		}
	}
	byID := map[string]*model.IPRule{}
	for _, r := range snap.IPRules {
		if !inForce(r) {
			continue
		}
		byID[r.ID] = r
		if len(r.Routes) == 0 {
			use(r)
			continue
		}
		for _, rid := range r.Routes {
			if route != nil && rid == route.ID {
				use(r)
			}
		}
	}
	if route != nil && route.Auth != nil {
		for _, id := range route.Auth.IPRules {
			if r := byID[id]; r != nil && len(r.Routes) > 0 {
				use(r)
			}
		}
	}
	for _, s := range deny {
		if s.contains(a, at) {
			return ReasonIPDenied, false
		}
	}
	if len(allow) == 0 {
		return "", true
	}
	for _, s := range allow {
		if s.contains(a, at) {
			return "", true
		}
	}
	return ReasonIPNotAllowed, false
}

var diffCIDRs = []string{
	"10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "10.1.2.3/32", "192.0.2.0/24", "0.0.0.0/0",
	"::ffff:10.0.0.0/104", "::ffff:10.1.2.3", "2001:db8::/32", "2001:db8::1", "::/0", "10.0.0.0/08",
}

var diffAddrs = []string{
	"10.1.2.3", "10.1.9.9", "10.200.0.1", "192.0.2.7", "198.51.100.1", "::ffff:10.1.2.3", "::ffff:192.0.2.7",
	"2001:db8::1", "2001:db8::2", "2001:db9::1", "fe80::1%eth0", "::ffff:203.0.113.9",
}

// TestIPDecisionMatchesPerRouteCopies is a differential test of the global ip-rules merged
// into one shared set per action against the reference decision (each route its own copy of
// every global rule): random rule sets (global and route-scoped, allow and deny, overlapping
// CIDRs, IPv4-mapped IPv6, zones, rules expired before the build, expiring after it), random
// addresses, decided at the build and at later times.
func TestIPDecisionMatchesPerRouteCopies(t *testing.T) {
	built := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	routeIDs := []string{"r1", "r2", "r3"}
	f := false
	for seed := range uint64(400) {
		rng := rand.New(rand.NewPCG(seed, 11))
		snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}}
		for i := range 1 + rng.IntN(6) {
			r := &model.IPRule{ID: fmt.Sprintf("ip%d", i), Action: []string{"allow", "deny"}[rng.IntN(2)]}
			for range 1 + rng.IntN(3) {
				r.CIDRs = append(r.CIDRs, diffCIDRs[rng.IntN(len(diffCIDRs))])
			}
			if rng.IntN(2) == 0 {
				r.Routes = []string{routeIDs[rng.IntN(len(routeIDs))]}
			}
			switch rng.IntN(3) {
			case 0:
				exp := built.Add(time.Duration(rng.IntN(3)-1) * time.Hour) // before, at or after the build
				r.ExpiresAt = &exp
			case 1:
				exp := built.Add(time.Duration(1+rng.IntN(120)) * time.Minute)
				r.ExpiresAt = &exp
			}
			snap.IPRules = append(snap.IPRules, r)
		}
		for _, id := range routeIDs {
			r := &model.Route{ID: id, RequireAuth: &f, Conditions: []model.Condition{{PathPrefix: "/" + id}},
				Targets: []model.Target{{Host: "10.9.9.9", Port: 80}}}
			if rng.IntN(2) == 0 {
				r.Auth = &model.RouteAuth{IPRules: []string{fmt.Sprintf("ip%d", rng.IntN(6))}}
			}
			snap.Routes = append(snap.Routes, r)
		}
		e, err := New(Options{Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(), Clock: func() time.Time { return built }})
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.build(snap)
		if err != nil {
			t.Fatal(err)
		}
		for _, at := range []time.Time{built, built.Add(30 * time.Minute), built.Add(3 * time.Hour)} {
			for _, as := range diffAddrs {
				a, err := netip.ParseAddr(as)
				if err != nil {
					t.Fatal(err)
				}
				for _, route := range append([]*model.Route{nil}, snap.Routes...) {
					rp, name := res.t.def, "(no route)"
					if route != nil {
						name = route.ID
						if rp = res.t.routes[route.ID]; rp == nil {
							t.Fatalf("seed %d: route %s has no ext_authz entry", seed, route.ID)
						}
					}
					wantReason, wantOK := referenceIPDecision(snap, route, built, at, a)
					gotReason, gotOK := rp.ip.check(a, at)
					if gotOK != wantOK || gotReason != wantReason {
						t.Fatalf("seed %d, route %s, %s at build+%s: got (%q, %v), the per-route copies decided (%q, %v); rules: %s",
							seed, name, as, at.Sub(built), gotReason, gotOK, wantReason, wantOK, rulesString(snap.IPRules))
					}
				}
			}
		}
	}
}

func rulesString(rules []*model.IPRule) string {
	out := ""
	for _, r := range rules {
		exp := "never"
		if r.ExpiresAt != nil {
			exp = r.ExpiresAt.Format(time.TimeOnly)
		}
		out += fmt.Sprintf("[%s %s %v routes=%v expires=%s] ", r.ID, r.Action, r.CIDRs, r.Routes, exp)
	}
	return out
}
