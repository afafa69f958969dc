package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

func decodeModel(t *testing.T, js string, obj any) {
	t.Helper()
	if fe := model.DecodeStrict([]byte(js), obj); len(fe) > 0 {
		t.Fatalf("decode %s: %v", js, fe)
	}
}

func generatedSnapshot(t *testing.T) *model.Snapshot {
	var pUser, pIP, pG, dom model.RateLimit
	decodeModel(t, `{"id":"p-user","strategy":"token_bucket","requests_per_unit":2,"time_unit":"1m","by":"user",
		"headers":{"enable":true,"remaining":true,"reset":true,"total":true,"retry_after":true}}`, &pUser)
	decodeModel(t, `{"id":"p-ip","algorithm":"fixed_window","requests_per_unit":1,"time_unit":"1h","by":"ip","fail_mode":"closed"}`, &pIP)
	decodeModel(t, `{"id":"g","algorithm":"sliding_window","requests_per_unit":3,"time_unit":"1m","by":"tenant",
		"quota":{"per_day":100}}`, &pG)
	decodeModel(t, `{"id":"dom","domain":"custom","descriptors":[{"key":"k","rate_limit":{"unit":"second","requests_per_unit":1}}]}`, &dom)
	var r1, r2 model.Route
	decodeModel(t, `{"id":"r1","conditions":[{"path_pattern":"/a/*"}],"targets":[{"host":"a","port":80}],
		"rate_limit":{"policies":["p-user","p-ip","missing"],"limits":[{"by":"header","header":"x-client","algorithm":"fixed_window","requests_per_unit":1,"time_unit":"1m"}]}}`, &r1)
	decodeModel(t, `{"id":"r2","conditions":[{"path_pattern":"/b"}],"targets":[{"host":"b","port":80}],"rate_limit":{"skip_global":true}}`, &r2)
	var settings model.Settings
	decodeModel(t, `{"id":"global","rate_limit":{"policies":["g"],"fail_mode":"open","headers":{"enable":true,"ietf":true,"total":false}}}`, &settings)
	for _, o := range []model.Object{&pUser, &pIP, &pG, &dom, &r1, &r2, &settings} {
		if fe := o.Validate(); len(fe) > 0 {
			t.Fatalf("%s: %v", o.GetID(), fe)
		}
	}
	return &model.Snapshot{Revision: 3, Routes: []*model.Route{&r1, &r2}, RateLimits: []*model.RateLimit{&dom, &pG, &pIP, &pUser}, Settings: &settings}
}

// envoyDescriptors does what Envoy does with the actions: fills each entry from the request.
func envoyDescriptors(rls []ir.RateLimit, user, ip, tenant, clientHeader string) []*rlcommon.RateLimitDescriptor {
	var out []*rlcommon.RateLimitDescriptor
	for _, rl := range rls {
		d := &rlcommon.RateLimitDescriptor{}
		for _, e := range rl.Entries {
			v := e.Value
			switch e.Kind {
			case ir.RateLimitRemoteAddress:
				v = ip
			case ir.RateLimitMetadata:
				v = map[string]string{"user_id": user, "tenant_id": tenant}[e.MetadataKey]
			case ir.RateLimitRequestHeader:
				v = clientHeader
			}
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: e.DescriptorKey, Value: v})
		}
		out = append(out, d)
	}
	return out
}

func TestGeneratedDomainMatchesRouteActions(t *testing.T) {
	snap := generatedSnapshot(t)
	rules, err := BuildRules(snap)
	if err == nil || !strings.Contains(err.Error(), "rate-limits/missing does not exist") {
		t.Fatalf("want the missing policy reported, got %v", err)
	}
	if len(rules.Domains()) != 2 {
		t.Fatalf("domains %v", rules.Domains())
	}
	acts := translate.RouteRateLimits(snap.Route("r1"), snap)
	got, _ := json.Marshal(acts)
	want := `[{"Entries":[{"Kind":"generic_key","DescriptorKey":"route_id","Value":"r1","MetadataKey":"","Header":""},{"Kind":"generic_key","DescriptorKey":"policy","Value":"p-user","MetadataKey":"","Header":""},{"Kind":"metadata","DescriptorKey":"user","Value":"","MetadataKey":"user_id","Header":""}]},` +
		`{"Entries":[{"Kind":"generic_key","DescriptorKey":"route_id","Value":"r1","MetadataKey":"","Header":""},{"Kind":"generic_key","DescriptorKey":"policy","Value":"p-ip","MetadataKey":"","Header":""},{"Kind":"remote_address","DescriptorKey":"remote_address","Value":"","MetadataKey":"","Header":""}]},` +
		`{"Entries":[{"Kind":"generic_key","DescriptorKey":"route_id","Value":"r1","MetadataKey":"","Header":""},{"Kind":"generic_key","DescriptorKey":"policy","Value":"r1-0","MetadataKey":"","Header":""},{"Kind":"request_header","DescriptorKey":"header","Value":"","MetadataKey":"","Header":"x-client"}]},` +
		`{"Entries":[{"Kind":"generic_key","DescriptorKey":"policy","Value":"g","MetadataKey":"","Header":""},{"Kind":"metadata","DescriptorKey":"tenant","Value":"","MetadataKey":"tenant_id","Header":""}]}]`
	if string(got) != want {
		t.Fatalf("actions:\n%s\nwant\n%s", got, want)
	}
	for _, a := range acts {
		if err := a.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(translate.RouteRateLimits(snap.Route("r2"), snap)); n != 0 {
		t.Fatalf("r2 skips global policies, got %d actions", n)
	}

	clock := newFakeClock(base)
	svc, err := New(Options{Clock: clock, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRules(rules)
	call := func(user, ip, tenant, hdr string) *rlsv3.RateLimitResponse {
		resp, err := svc.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: translate.GeneratedRateLimitDomain,
			Descriptors: envoyDescriptors(acts, user, ip, tenant, hdr)})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	codes := func(r *rlsv3.RateLimitResponse) string {
		var s []string
		for _, st := range r.Statuses {
			s = append(s, st.Code.String())
		}
		return strings.Join(s, ",")
	}
	// Every descriptor matched a limit: each status carries one.
	r := call("alice", "10.0.0.1", "t1", "c1")
	if codes(r) != "OK,OK,OK,OK" {
		t.Fatalf("first call: %s", codes(r))
	}
	for _, st := range r.Statuses {
		if st.CurrentLimit == nil {
			t.Fatalf("descriptor without a limit: %v", r.Statuses)
		}
	}
	// Same user, other IP and header: p-user (2 per minute) admits a second, then denies.
	if c := codes(call("alice", "10.0.0.2", "t1", "c2")); c != "OK,OK,OK,OK" {
		t.Fatalf("second: %s", c)
	}
	r = call("alice", "10.0.0.3", "t1", "c3")
	if c := codes(r); c != "OVER_LIMIT,OK,OK,OK" || r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("third: %s", c)
	}
	hdrs := headerMap(r.ResponseHeadersToAdd)
	if hdrs["x-ratelimit-limit"] != "2" || hdrs["x-ratelimit-remaining"] != "0" || hdrs["retry-after"] != "30" || hdrs["x-ratelimit-reset"] != "60" {
		t.Fatalf("429 headers: %v", hdrs)
	}
	// Tenant t1's global sliding window (3 per minute) is now spent across users; bob is fine otherwise.
	r = call("bob", "10.0.0.4", "t1", "c4")
	if c := codes(r); c != "OK,OK,OK,OVER_LIMIT" {
		t.Fatalf("tenant: %s", c)
	}
	// p-ip is 1 per hour per client address.
	if c := codes(call("carol", "10.0.0.1", "t2", "c5")); c != "OK,OVER_LIMIT,OK,OK" {
		t.Fatalf("ip: %s", c)
	}
	clock.Set(base.Add(time.Minute))
	r = call("erin", "10.0.0.10", "t4", "c10")
	hdrs = headerMap(r.ResponseHeadersToAdd)
	// p-ip (1 per hour, just spent) is closest; it uses the settings' headers: IETF on, total off.
	if hdrs["ratelimit-policy"] != `"p-ip";q=1;w=3600` || hdrs["x-ratelimit-remaining"] != "0" || hdrs["x-ratelimit-limit"] != "" {
		t.Fatalf("closest-to-limit headers: %v", hdrs)
	}
}

func headerMap(hs []*corev3.HeaderValue) map[string]string {
	m := map[string]string{}
	for _, h := range hs {
		m[h.Key] = h.Value
	}
	return m
}

func TestIETFHeaders(t *testing.T) {
	d := ir.RateLimitDomain{Name: "test", Descriptors: []ir.RateLimitDescriptor{{Key: "k", Name: "pol",
		Headers: ir.RateLimitHeaders{IETF: true, RetryAfter: true},
		Limits:  []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 2, Period: time.Minute}}}}}
	clock := newFakeClock(base.Add(15 * time.Second))
	svc := newTestService(t, NewMemoryStore(), clock, d)
	r, _ := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
	h := headerMap(r.ResponseHeadersToAdd)
	// base is 20s into its minute (1_700_000_000 mod 60 = 20): 15s later, 25s remain.
	if h["ratelimit-policy"] != `"pol";q=2;w=60` || h["ratelimit"] != `"pol";r=1;t=25` || h["retry-after"] != "" {
		t.Fatalf("headers %v", h)
	}
	svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
	r, _ = svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
	h = headerMap(r.ResponseHeadersToAdd)
	if r.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT || h["retry-after"] != "25" || h["ratelimit"] != `"pol";r=0;t=25` {
		t.Fatalf("429 headers %v", h)
	}
	if n := promtest.ToFloat64(svc.metrics.hits.WithLabelValues("test", "k", "fixed_window", "over_limit")); n != 1 {
		t.Fatalf("over_limit hits %v", n)
	}
	if n := promtest.ToFloat64(svc.metrics.hits.WithLabelValues("test", "k", "fixed_window", "ok")); n != 2 {
		t.Fatalf("ok hits %v", n)
	}
	if r.Statuses[0].DurationUntilReset.AsDuration() != 25*time.Second {
		t.Fatalf("duration_until_reset %v", r.Statuses[0].DurationUntilReset.AsDuration())
	}
}

func TestModelValidation(t *testing.T) {
	cases := []struct {
		js   string
		want []string
	}{
		{`{"strategy":"token_bucket","requests_per_unit":100,"time_unit":"1m","burst_capacity":150,
		  "headers":{"enable":true,"remaining":true,"reset":true,"total":true,"retry_after":true}}`, nil},
		{`{"strategy":"bogus","requests_per_unit":1,"time_unit":"1m"}`, []string{"strategy"}},
		{`{"algorithm":"fixed_window","requests_per_unit":1}`, []string{"time_unit"}},
		{`{"algorithm":"fixed_window","time_unit":"1m"}`, []string{"requests_per_unit"}},
		{`{"requests_per_unit":1,"time_unit":"7d","by":"header"}`, []string{"header"}},
		{`{"requests_per_unit":1,"time_unit":"1m","fail_mode":"maybe","spike_arrest":{"rate_per_second":0}}`, []string{"fail_mode", "spike_arrest.rate_per_second"}},
		{`{"by":"user","quota":{"per_day":1000,"per_month":20000}}`, nil},
		{`{"domain":"d","descriptors":[{"key":"a","rate_limit":{"unit":"fortnight","requests_per_unit":1}},
		   {"key":"b","descriptors":[{"key":"c","rate_limit":{"unlimited":true,"unit":"second"}}]}]}`,
			[]string{"descriptors[0].rate_limit.unit", "descriptors[1].descriptors[0].rate_limit.unit"}},
		{`{"domain":"d","descriptors":[{"key":"a","value":"x","share_threshold":true,"rate_limit":{"unit":"second","requests_per_unit":1,"name":"n","replaces":[{"name":"n"}]}}]}`,
			[]string{"descriptors[0].share_threshold", "descriptors[0].rate_limit.replaces[0].name"}},
		{`{"domain":"d","requests_per_unit":5,"descriptors":[{"key":"a"}]}`, []string{"requests_per_unit"}},
	}
	for i, tc := range cases {
		var rl model.RateLimit
		decodeModel(t, tc.js, &rl)
		fe := rl.Validate()
		var fields []string
		for _, e := range fe {
			fields = append(fields, e.Field)
		}
		if strings.Join(fields, "|") != strings.Join(tc.want, "|") {
			t.Errorf("case %d: fields %v (%v), want %v", i, fields, fe, tc.want)
		}
	}
	var rr model.RouteRateLimit
	decodeModel(t, `{"policies":["a","a","bad id"],"limits":[{"domain":"x"}],"fail_mode":"x"}`, &rr)
	if fe := rr.Validate(); len(fe) != 4 {
		t.Errorf("route rate_limit: %v", fe)
	}
}

// countingStore counts the calls that reach the real store under it.
type countingStore struct {
	Store
	calls int
}

func (c *countingStore) Eval(ctx context.Context, now int64, g [][]Check) ([][]Result, error) {
	c.calls++
	return c.Store.Eval(ctx, now, g)
}

// TestLocalOverLimitCache: once a counter denies, calls are answered locally until the time
// the same request could pass, then go to the store again.
func TestLocalOverLimitCache(t *testing.T) {
	store := &countingStore{Store: NewMemoryStore()}
	clock := newFakeClock(base)
	svc := newTestService(t, store, clock, oneRuleDomain(ir.RateLimitRule{Algorithm: ir.TokenBucket, Requests: 1, Period: time.Second, Burst: 1}))
	code := func() rlsv3.RateLimitResponse_Code {
		r, _ := svc.ShouldRateLimit(context.Background(), req("test", []string{"k", "v"}))
		return r.OverallCode
	}
	if code() != rlsv3.RateLimitResponse_OK || code() != rlsv3.RateLimitResponse_OVER_LIMIT || store.calls != 2 {
		t.Fatalf("setup: calls %d", store.calls)
	}
	clock.Set(base.Add(999 * time.Millisecond))
	if code() != rlsv3.RateLimitResponse_OVER_LIMIT || store.calls != 2 {
		t.Fatalf("cached deny should not reach the store: calls %d", store.calls)
	}
	clock.Set(base.Add(time.Second))
	if code() != rlsv3.RateLimitResponse_OK || store.calls != 3 {
		t.Fatalf("after the retry time: calls %d", store.calls)
	}
}

// TestRouteWithTooManyPoliciesReported: a route to which more than MaxDescriptors rate limits
// apply makes Envoy send a request the service refuses (InvalidArgument, on which Envoy fails
// open, so nothing limits that route); BuildRules reports the route instead of leaving it
// silently unlimited. One at the cap is not reported.
func TestRouteWithTooManyPoliciesReported(t *testing.T) {
	build := func(n int) (*model.Snapshot, error) {
		snap := &model.Snapshot{Revision: 1}
		var ids []string
		for i := 0; i < n; i++ {
			var p model.RateLimit
			decodeModel(t, fmt.Sprintf(`{"id":"p%d","algorithm":"fixed_window","requests_per_unit":5,"time_unit":"1m","by":"ip"}`, i), &p)
			snap.RateLimits = append(snap.RateLimits, &p)
			ids = append(ids, fmt.Sprintf("%q", p.ID))
		}
		var r model.Route
		decodeModel(t, `{"id":"wide","conditions":[{"path_pattern":"/w"}],"targets":[{"host":"a","port":80}],"rate_limit":{"policies":[`+strings.Join(ids, ",")+`]}}`, &r)
		snap.Routes = []*model.Route{&r}
		_, err := BuildRules(snap)
		return snap, err
	}
	if _, err := build(MaxDescriptors); err != nil {
		t.Fatalf("%d policies: %v", MaxDescriptors, err)
	}
	snap, err := build(MaxDescriptors + 1)
	if err == nil || !strings.Contains(err.Error(), "routes/wide") {
		t.Fatalf("%d policies: %v, want the route reported", MaxDescriptors+1, err)
	}
	if n := len(translate.RouteRateLimits(snap.Route("wide"), snap)); n != MaxDescriptors+1 {
		t.Fatalf("%d descriptors", n)
	}
}
