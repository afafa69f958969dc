package ratelimit

import (
	"fmt"
	"sort"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// The rate-limit service's checks: what it would not enforce, found before it is stored.
// CheckObject names the field of the object being written (the API, dry_run, the YAML file
// and `validate -f` run it); RevisionProblems lists a whole revision's (the consumer refuses
// a write that adds one). Both read the model through the translation the service is fed
// from (translate.RouteRateLimits, translate.PolicyRules, translate.ConfigDomain), and count
// a route's descriptors with ir.CheckRouteRateLimits, the check the service runs on every
// request.

// maxRoutesNamed bounds the routes one problem of the settings names: a settings write may
// push thousands of routes over the cap; the count says how many.
const maxRoutesNamed = 10

// CheckObject is the rate-limit service's object check (pipeline.ObjectChecker): obj joined
// to snap (replacing the object of its id) must leave no route with more rate limits than the
// service enforces per request, and every limit it holds must compile (bounds, domain configs
// whose descriptors another config of the domain already holds, descriptors nested deeper
// than a request carries). Objects with errors of their own are left to their Validate.
func CheckObject(obj model.Object, snap *model.Snapshot) model.FieldErrors {
	if obj == nil || snap == nil || len(obj.Validate()) > 0 {
		return nil
	}
	switch o := obj.(type) {
	case *model.Route:
		s := *snap
		s.Routes = replaceByID(snap.Routes, o)
		return checkRoute(o, &s)
	case *model.Settings:
		s := *snap
		s.Settings = o
		return checkSettings(o, &s)
	case *model.RateLimit:
		s := *snap
		s.RateLimits = replaceByID(snap.RateLimits, o)
		return checkRateLimit(o, &s)
	}
	return nil
}

// replaceByID returns list (sorted by id) with o in place of the object of its id.
func replaceByID[T model.Object](list []T, o T) []T {
	id := o.GetID()
	i := sort.Search(len(list), func(i int) bool { return list[i].GetID() >= id })
	out := make([]T, 0, len(list)+1)
	out = append(out, list[:i]...)
	out = append(out, o)
	if i < len(list) && list[i].GetID() == id {
		i++
	}
	return append(out, list[i:]...)
}

func checkRoute(r *model.Route, snap *model.Snapshot) model.FieldErrors {
	var errs model.FieldErrors
	if e := routeShape(r, snap); e != "" {
		errs.Add("rate_limit", "%s", e)
	}
	if rr := r.RateLimit; rr != nil {
		for i := range rr.Limits {
			errs.Nest(fmt.Sprintf("rate_limit.limits[%d]", i), policyBounds(&rr.Limits[i]))
		}
	}
	return errs
}

// routeShape words the route's rate limits past the caps ("" when within them).
func routeShape(r *model.Route, snap *model.Snapshot) string {
	rls := translate.RouteRateLimits(r, snap)
	e := ir.CheckRouteRateLimits(rls)
	if e == nil {
		return ""
	}
	if e.Descriptor >= 0 {
		return fmt.Sprintf("rate limit %d has %d entries, of at most %d per descriptor the rate-limit service enforces (Envoy fails open beyond: none would limit the route)",
			e.Descriptor, e.Entries, MaxDescriptorEntries)
	}
	own := 0
	for _, rl := range rls {
		if len(rl.Entries) > 0 && rl.Entries[0].DescriptorKey == translate.RateLimitKeyRoute {
			own++
		}
	}
	return fmt.Sprintf("%d rate limits apply (%d of the route's own, %d global), of at most %d per request the rate-limit service enforces (Envoy fails open beyond: none would limit the route)",
		len(rls), own, len(rls)-own, MaxDescriptors)
}

func checkSettings(st *model.Settings, snap *model.Snapshot) model.FieldErrors {
	var errs model.FieldErrors
	if g := st.RateLimit; g != nil {
		for i := range g.Limits {
			errs.Nest(fmt.Sprintf("rate_limit.limits[%d]", i), policyBounds(&g.Limits[i]))
		}
	}
	var over []string
	first := ""
	// The global limits every route gets; a route's own are at most its policies and inline
	// limits: only a route that could go past the cap is translated (a settings write must
	// not cost a translation of every route).
	global := len(translate.RouteRateLimits(&model.Route{}, snap))
	for _, r := range snap.Routes {
		if rr := r.RateLimit; rr == nil && global <= MaxDescriptors || rr != nil && (rr.SkipGlobal || global+len(rr.Policies)+len(rr.Limits) <= MaxDescriptors) {
			continue
		}
		if len(r.Validate()) > 0 {
			continue // not served anyway (its own errors)
		}
		if e := routeShape(r, snap); e != "" {
			if first == "" {
				first = e
			}
			over = append(over, "routes/"+r.ID)
		}
	}
	if len(over) > 0 {
		named := over
		more := ""
		if len(named) > maxRoutesNamed {
			named, more = named[:maxRoutesNamed], fmt.Sprintf(" and %d more", len(over)-maxRoutesNamed)
		}
		errs.Add("rate_limit", "%d route(s) would go past the rate-limit service's cap: %v%s; %s: %s",
			len(over), named, more, over[0], first)
	}
	return errs
}

func checkRateLimit(rl *model.RateLimit, snap *model.Snapshot) model.FieldErrors {
	if !rl.IsDomain() {
		return policyBounds(rl)
	}
	var errs model.FieldErrors
	d, err := translate.ConfigDomain(rl, rlGlobal(snap))
	if err != nil {
		errs.Add("", "%v", err)
		return errs
	}
	walkDescriptors(&errs, "descriptors", 1, rl.Descriptors, d.Descriptors)
	checkDomainOverlap(&errs, rl, snap)
	return errs
}

func rlGlobal(snap *model.Snapshot) *model.GlobalRateLimit {
	if snap.Settings == nil || snap.Settings.RateLimit == nil {
		return &model.GlobalRateLimit{}
	}
	return snap.Settings.RateLimit
}

// walkDescriptors checks a domain config's descriptors (ms, as written) against their
// translation (ds, one for one): depth and each limit's bounds.
func walkDescriptors(errs *model.FieldErrors, path string, depth int, ms []model.RateLimitDescriptor, ds []ir.RateLimitDescriptor) {
	for i := range ms {
		if i >= len(ds) {
			return
		}
		p := fmt.Sprintf("%s[%d]", path, i)
		if depth > MaxDescriptorEntries {
			errs.Add(p, "nested %d deep; a request descriptor carries at most %d entries, so the rate-limit service could never match it", depth, MaxDescriptorEntries)
			continue
		}
		for _, rule := range ds[i].Limits {
			if what, err := ruleBounds(rule); err != nil {
				f := map[string]string{"requests": "requests_per_unit", "burst": "burst_capacity", "period": "time_unit"}[what]
				if what == "period" && ms[i].RateLimit != nil && ms[i].RateLimit.Unit != "" {
					f = "unit"
				}
				errs.Add(p+".rate_limit."+f, "%v", err)
			}
		}
		walkDescriptors(errs, p+".descriptors", depth+1, ms[i].Descriptors, ds[i].Descriptors)
	}
}

// checkDomainOverlap reports the top-level descriptors of rl that another object of its
// domain holds too: configs of one domain are merged in id order after the generated domain,
// and a descriptor already loaded is left out (translate.RateLimitDomains). Either way one of
// the two would not apply.
func checkDomainOverlap(errs *model.FieldErrors, rl *model.RateLimit, snap *model.Snapshot) {
	type kv struct{ key, value string }
	owner := map[kv]string{}
	if rl.Domain == translate.GeneratedRateLimitDomain {
		gen, _ := translate.GeneratedDomain(snap)
		for _, d := range gen.Descriptors {
			owner[kv{d.Key, d.Value}] = "the descriptors generated from routes and settings"
		}
	}
	for _, other := range snap.RateLimits {
		if other.ID == rl.ID || !other.IsDomain() || other.Domain != rl.Domain {
			continue
		}
		for _, d := range other.Descriptors {
			if _, taken := owner[kv{d.Key, d.Value}]; !taken {
				owner[kv{d.Key, d.Value}] = "rate-limits/" + other.ID
			}
		}
	}
	for i, d := range rl.Descriptors {
		if o, taken := owner[kv{d.Key, d.Value}]; taken {
			errs.Add(fmt.Sprintf("descriptors[%d]", i), "domain %q has descriptor %s=%s in %s too; one of the two would not apply", rl.Domain, d.Key, d.Value, o)
		}
	}
}

// policyBounds checks a policy's rules (translate.PolicyRules) against the service's bounds.
func policyBounds(p *model.RateLimit) model.FieldErrors {
	var errs model.FieldErrors
	if p.IsDomain() {
		return nil
	}
	fields := map[string]map[string]string{
		"limit":        {"requests": "requests_per_unit", "burst": "burst_capacity", "period": "time_unit"},
		"spike_arrest": {"requests": "spike_arrest.rate_per_second", "burst": "spike_arrest.burst", "period": "spike_arrest"},
		"quota_day":    {"requests": "quota.per_day", "burst": "quota.per_day", "period": "quota.per_day"},
		"quota_month":  {"requests": "quota.per_month", "burst": "quota.per_month", "period": "quota.per_month"},
	}
	for _, rule := range translate.PolicyRules(p) {
		if what, err := ruleBounds(rule); err != nil {
			f := fields[rule.Kind][what]
			if f == "" {
				f = rule.Kind
			}
			errs.Add(f, "%v", err)
		}
	}
	return errs
}

// Problem is one thing of a revision the rate-limit service would not enforce. Key names it
// across revisions (the route or descriptor, not the counts), to tell a new problem from one
// already served.
type Problem struct{ Key, Text string }

// CompileRevision compiles a revision's rules (BuildRulesFromIR) and lists what of it the
// rate-limit service would not enforce: routes past the caps (translation left them out, in
// cfg.RouteErrors: not served), descriptors and policies that do not compile (left out of
// the rules). The consumer's check and its prepare both run it: a check is a compile.
func CompileRevision(snap *model.Snapshot, cfg *ir.Config) (*Rules, []Problem) {
	var out []Problem
	if snap != nil {
		ids := make([]string, 0, len(cfg.RouteErrors))
		for id := range cfg.RouteErrors {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			r := snap.Route(id)
			if r == nil {
				continue
			}
			if e := routeShape(r, snap); e != "" {
				out = append(out, Problem{Key: "routes/" + id + ": rate_limit", Text: "routes/" + id + ": rate_limit: " + e + "; the route is not served"})
			}
		}
	}
	for _, p := range cfg.RateLimit.Problems {
		out = append(out, Problem{Key: p, Text: p})
	}
	rules, errs := buildDomains(cfg.Revision, cfg.RateLimit.Domains)
	for _, e := range errs {
		out = append(out, Problem{Key: e.Error(), Text: e.Error()})
	}
	return rules, out
}
