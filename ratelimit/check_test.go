package ratelimit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	commonrl "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// inlineLimits returns n inline policy limits as JSON, ids prefixed.
func inlineLimits(prefix string, n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"id":"%s%d","algorithm":"fixed_window","requests_per_unit":5,"time_unit":"1m","by":"ip"}`, prefix, i)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// capRoute is a route with own inline limits. Routes and settings past
// model.MaxPoliciesPerScope are refused by the model; a store may still hold them (written by
// an older version), so they are decoded here without validation.
func capRoute(t *testing.T, id string, own int) *model.Route {
	t.Helper()
	var r model.Route
	decodeModel(t, `{"id":"`+id+`","conditions":[{"path_prefix":"/`+id+`"}],"targets":[{"host":"10.0.0.1","port":80}],"require_auth":false,"rate_limit":{"limits":`+inlineLimits(id+"-", own)+`}}`, &r)
	return &r
}

func capSettings(t *testing.T, global int) *model.Settings {
	t.Helper()
	var s model.Settings
	decodeModel(t, `{"id":"global","rate_limit":{"limits":`+inlineLimits("g", global)+`}}`, &s)
	return &s
}

func capSnapshot(settings *model.Settings, routes ...*model.Route) *model.Snapshot {
	return &model.Snapshot{Revision: 7, Settings: settings, Routes: routes}
}

// requestOf is the request Envoy sends for a translated route when every action produces
// its entry: one descriptor per rate limit, one entry per action.
func requestOf(rls []ir.RateLimit) *rlsv3.RateLimitRequest {
	req := &rlsv3.RateLimitRequest{Domain: translate.GeneratedRateLimitDomain}
	for _, rl := range rls {
		d := &commonrl.RateLimitDescriptor{}
		for _, e := range rl.Entries {
			d.Entries = append(d.Entries, &commonrl.RateLimitDescriptor_Entry{Key: e.DescriptorKey, Value: "v"})
		}
		req.Descriptors = append(req.Descriptors, d)
	}
	return req
}

// TestRouteAtTheCapServedPastItLeftOut: the exact boundary, through translation and the
// service. At MaxDescriptors rate limits (the most the model allows: 32 own, 32 global) the
// route is translated and the service accepts its request; one more (a store written before
// the per-scope caps) and translation leaves the route out, with a route error, so Envoy
// never sends the request the service would refuse and fail open on. Both decisions come from
// one function, ir.CheckRateLimitShape.
func TestRouteAtTheCapServedPastItLeftOut(t *testing.T) {
	svc := newTestService(t, NewMemoryStore(), newFakeClock(time.Unix(1_700_000_000, 0)))
	for _, tc := range []struct {
		own, global int
		served      bool
	}{
		{model.MaxPoliciesPerScope, model.MaxPoliciesPerScope, true},
		{model.MaxPoliciesPerScope, model.MaxPoliciesPerScope + 1, false},
		{MaxDescriptors + 1, 0, false},
		{10_000, 0, false},
	} {
		name := fmt.Sprintf("%d own + %d global", tc.own, tc.global)
		r := capRoute(t, "wide", tc.own)
		snap := capSnapshot(capSettings(t, tc.global), r)
		rls := translate.RouteRateLimits(r, snap)
		if len(rls) != tc.own+tc.global {
			t.Fatalf("%s: %d rate limits", name, len(rls))
		}
		cfg, err := translate.Translate(snap, translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, left := cfg.RouteErrors["wide"]
		if left == tc.served {
			t.Fatalf("%s: route errors %v, want served=%v", name, cfg.RouteErrors, tc.served)
		}
		_, err = svc.ShouldRateLimit(context.Background(), requestOf(rls))
		if tc.served && err != nil {
			t.Fatalf("%s: translated, but the service refuses its request: %v", name, err)
		}
		if !tc.served {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("%s: left out, but the service takes its request: %v", name, err)
			}
			// Past the model's per-scope cap the route's own validation leaves it out first.
			want := fmt.Sprintf("%d rate limits apply to this route", tc.own+tc.global)
			if tc.own > model.MaxPoliciesPerScope {
				want = "at most 32 apply to one route"
			}
			if !strings.Contains(cfg.RouteErrors["wide"], want) {
				t.Fatalf("%s: route error %q, want %q", name, cfg.RouteErrors["wide"], want)
			}
			_, problems := CompileRevision(snap, cfg)
			if len(problems) != 1 || problems[0].Key != "routes/wide: rate_limit" || !strings.Contains(problems[0].Text, fmt.Sprintf("of at most %d", MaxDescriptors)) {
				t.Fatalf("%s: problems %+v", name, problems)
			}
		}
	}
}

// TestCheckObjectNamesTheFieldAndTheNumbers: writes that would push a route past the cap are
// refused with the field to fix and n of max: a route written next to stored global limits,
// and a settings write adding global limits to a stored route.
func TestCheckObjectNamesTheFieldAndTheNumbers(t *testing.T) {
	legacy := capSettings(t, MaxDescriptors) // stored by an older version: 64 global limits
	r := capRoute(t, "new", 1)
	errs := CheckObject(r, capSnapshot(legacy))
	if len(errs) != 1 || errs[0].Field != "rate_limit" || !strings.Contains(errs[0].Problem, "65 rate limits apply (1 of the route's own, 64 global), of at most 64") {
		t.Fatalf("route write: %v", errs)
	}
	if errs := CheckObject(r, capSnapshot(capSettings(t, MaxDescriptors-1))); len(errs) != 0 {
		t.Fatalf("route at the cap: %v", errs)
	}

	// Settings pushing a stored route over: not reachable with the model's per-scope caps
	// (32 + 32 = MaxDescriptors), so checkSettings is run past CheckObject's model validation,
	// as if the caps were ever raised apart.
	stored := capRoute(t, "stored", 40)
	snap := capSnapshot(&model.Settings{ID: model.SettingsID}, stored, capRoute(t, "small", 1))
	over := capSettings(t, 25)
	snap.Settings = over
	errs = checkSettings(over, snap)
	if len(errs) != 0 {
		t.Fatalf("a route the model leaves out anyway blocks settings: %v", errs)
	}
	if len(CheckObject(capRoute(t, "at", model.MaxPoliciesPerScope), capSnapshot(capSettings(t, model.MaxPoliciesPerScope)))) != 0 {
		t.Fatal("the largest route the model allows, with the most global limits it allows, is refused")
	}
}

// TestSettingsOverManyRoutesNamesAFew: settings pushing 10,000 routes over the cap are one
// problem naming a few of them and the count.
func TestSettingsOverManyRoutesNamesAFew(t *testing.T) {
	var routes []*model.Route
	shared := capRoute(t, "r", model.MaxPoliciesPerScope)
	for i := 0; i < 10_000; i++ {
		r := *shared
		r.ID = fmt.Sprintf("r%05d", i)
		routes = append(routes, &r)
	}
	// Past the model's cap on global limits: checkSettings, as CheckObject runs it.
	over := capSettings(t, model.MaxPoliciesPerScope+1)
	errs := checkSettings(over, capSnapshot(over, routes...))
	if len(errs) != 1 || !strings.Contains(errs[0].Problem, "10000 route(s)") || !strings.Contains(errs[0].Problem, "and 9990 more") {
		t.Fatalf("%v", errs)
	}
}

// TestPolicyOutOfBoundsRefused: a policy the model accepts but the service cannot count
// exactly (a bucket that takes longer than maxSpan to refill) is refused at its field, where
// before it was left out of the rules and its routes ran unlimited.
func TestPolicyOutOfBoundsRefused(t *testing.T) {
	for js, field := range map[string]string{
		`{"id":"slow","algorithm":"token_bucket","requests_per_unit":1,"time_unit":"24h","burst_capacity":100000}`: "burst_capacity",
		`{"id":"arrest","spike_arrest":{"rate_per_second":1,"burst":4294967295}}`:                                  "spike_arrest.burst",
	} {
		var p model.RateLimit
		decodeModel(t, js, &p)
		if fe := p.Validate(); len(fe) > 0 {
			t.Fatalf("%s: the model refuses it: %v", js, fe)
		}
		errs := CheckObject(&p, capSnapshot(nil))
		if len(errs) != 1 || errs[0].Field != field || !strings.Contains(errs[0].Problem, "to refill") {
			t.Fatalf("%s: %v, want %s", js, errs, field)
		}
		// The same as an inline limit of a route and of the settings.
		var r model.Route
		decodeModel(t, `{"id":"rt","conditions":[{"path_prefix":"/rt"}],"targets":[{"host":"10.0.0.1","port":80}],"rate_limit":{"limits":[`+js+`]}}`, &r)
		if errs := CheckObject(&r, capSnapshot(nil)); len(errs) != 1 || errs[0].Field != "rate_limit.limits[0]."+field {
			t.Fatalf("inline %s: %v", js, errs)
		}
		var s model.Settings
		decodeModel(t, `{"id":"global","rate_limit":{"limits":[`+js+`]}}`, &s)
		if errs := CheckObject(&s, capSnapshot(nil)); len(errs) != 1 || errs[0].Field != "rate_limit.limits[0]."+field {
			t.Fatalf("global %s: %v", js, errs)
		}
		// Stored anyway, it is a problem of the revision.
		snap := capSnapshot(nil)
		snap.RateLimits = []*model.RateLimit{&p}
		snap.Routes = []*model.Route{{ID: "uses", Conditions: r.Conditions, Targets: r.Targets, RateLimit: &model.RouteRateLimit{Policies: []string{p.ID}}}}
		cfg, err := translate.Translate(snap, translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, problems := CompileRevision(snap, cfg); len(problems) != 1 || !strings.Contains(problems[0].Text, "to refill") {
			t.Fatalf("%s: problems %+v", js, problems)
		}
	}
}

// nested returns a domain config whose descriptor chain is depth deep.
func nested(id string, depth int) string {
	var b strings.Builder
	b.WriteString(`{"id":"` + id + `","domain":"deep","descriptors":[`)
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, `{"key":"k%d"`, i)
		if i == depth {
			b.WriteString(`,"rate_limit":{"unit":"second","requests_per_unit":1}}`)
		} else {
			b.WriteString(`,"descriptors":[`)
		}
	}
	for i := 1; i < depth; i++ {
		b.WriteString("]}")
	}
	b.WriteString("]}")
	return b.String()
}

// TestDomainNestedPastTheEntriesCap: a request descriptor carries at most
// MaxDescriptorEntries entries; a domain descriptor deeper than that can never match. At the
// cap it compiles; one deeper it is refused at its field and left out of the rules.
func TestDomainNestedPastTheEntriesCap(t *testing.T) {
	var at, past model.RateLimit
	decodeModel(t, nested("at", MaxDescriptorEntries), &at)
	decodeModel(t, nested("past", MaxDescriptorEntries+1), &past)
	if errs := CheckObject(&at, capSnapshot(nil)); len(errs) != 0 {
		t.Fatalf("at the cap: %v", errs)
	}
	errs := CheckObject(&past, capSnapshot(nil))
	want := "descriptors[0]" + strings.Repeat(".descriptors[0]", MaxDescriptorEntries)
	if len(errs) != 1 || errs[0].Field != want || !strings.Contains(errs[0].Problem, "nested 33 deep") {
		t.Fatalf("past the cap: %v", errs)
	}
	for _, rl := range []*model.RateLimit{&at, &past} {
		snap := capSnapshot(nil)
		snap.RateLimits = []*model.RateLimit{rl}
		cfg, err := translate.Translate(snap, translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, problems := CompileRevision(snap, cfg)
		if (len(problems) > 0) != (rl == &past) {
			t.Fatalf("%s: problems %+v", rl.ID, problems)
		}
	}
}

// TestDomainOverlapRefused: two domain configs of one domain holding the same top-level
// descriptor (one would be left out), found among 10,000 descriptors with a 1 MiB value.
func TestDomainOverlapRefused(t *testing.T) {
	huge := strings.Repeat("v", 1<<20)
	var a, b model.RateLimit
	var ds []string
	for i := 0; i < 10_000; i++ {
		ds = append(ds, fmt.Sprintf(`{"key":"k%d","value":"%s","rate_limit":{"unit":"second","requests_per_unit":1}}`, i, huge[:i%8+1]))
	}
	ds = append(ds, `{"key":"big","value":"`+huge+`","rate_limit":{"unit":"second","requests_per_unit":1}}`)
	decodeModel(t, `{"id":"a","domain":"d","descriptors":[`+strings.Join(ds, ",")+`]}`, &a)
	decodeModel(t, `{"id":"b","domain":"d","descriptors":[{"key":"other","rate_limit":{"unit":"second","requests_per_unit":1}},{"key":"big","value":"`+huge+`","rate_limit":{"unit":"minute","requests_per_unit":1}}]}`, &b)
	snap := capSnapshot(nil)
	snap.RateLimits = []*model.RateLimit{&a}
	if errs := CheckObject(&a, snap); len(errs) != 0 {
		t.Fatalf("alone: %v", errs[:min(3, len(errs))])
	}
	errs := CheckObject(&b, snap)
	if len(errs) != 1 || errs[0].Field != "descriptors[1]" || !strings.Contains(errs[0].Problem, "in rate-limits/a too") {
		t.Fatalf("overlap: %d problems", len(errs))
	}
	// The generated domain's descriptors are taken too.
	var gen model.RateLimit
	decodeModel(t, `{"id":"gen","domain":"api-gateway","descriptors":[{"key":"policy","value":"g0","rate_limit":{"unit":"second","requests_per_unit":1}}]}`, &gen)
	if errs := CheckObject(&gen, capSnapshot(capSettings(t, 1))); len(errs) != 1 || !strings.Contains(errs[0].Problem, "generated") {
		t.Fatalf("generated: %v", errs)
	}
}
