package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/ratelimit"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/xds/server"
)

var memoT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// securityModel is a model whose routes read every shared input: settings with identity
// headers, a global WAF with geoblocking and a global rate limit, a route-scoped and a
// global ip-rule, a named and a global policy, a tenant route, an API key. Every object has
// a store revision; rev is the snapshot's.
func securityModel(rev uint64, mod func(*model.Snapshot)) *model.Snapshot {
	f, on := false, true
	exp := memoT0.Add(time.Hour)
	s := &model.Snapshot{Revision: rev,
		Settings: &model.Settings{ID: model.SettingsID, Meta: model.Meta{Revision: 1},
			Auth:      &model.AuthSettings{IdentityHeaders: map[string]string{"user_id": "x-who"}},
			WAF:       &model.WAFSettings{GeoblockingEnabled: true, BlockedCountries: []string{"zz"}},
			RateLimit: &model.GlobalRateLimit{Policies: []string{"rl-g"}}},
		Services: []*model.Service{{ID: "a1", Name: "svc-a", Host: "10.0.0.1", Port: 8080, Meta: model.Meta{Revision: 2}}},
		Routes: []*model.Route{
			{ID: "auth", Conditions: []model.Condition{{PathPrefix: "/auth"}, {PathPrefix: "/auth2", Method: "GET"}},
				Targets: []model.Target{{Service: "svc-a"}}, Tenant: "acme", Metadata: map[string]string{"team": "x"},
				Auth: &model.RouteAuth{Methods: []string{"jwt", "api_key"}, Scopes: []string{"read"}, Roles: []string{"admin"},
					Issuers: []string{"https://b", "https://a"}, IPRules: []string{"r-ip"}, Policies: []string{"p-named"},
					ClaimsToHeaders: map[string]string{"sub": "X-Sub", "email": "X-Mail"}},
				RateLimit: &model.RouteRateLimit{Policies: []string{"rl-1"}}, Meta: model.Meta{Revision: 3}},
			{ID: "pub", Conditions: []model.Condition{{PathPrefix: "/pub"}}, Targets: []model.Target{{Service: "svc-a"}},
				RequireAuth: &f, WAF: &model.WAFSettings{Enabled: &on, GeoblockingEnabled: true, BlockedCountries: []string{"yy"}},
				Meta: model.Meta{Revision: 4}},
		},
		IPRules: []*model.IPRule{
			{ID: "r-ip", Action: "allow", CIDRs: []string{"192.0.2.0/24"}, Routes: []string{"auth"}, Meta: model.Meta{Revision: 5}},
			{ID: "waf-1", Action: "deny", CIDRs: []string{"198.51.100.1"}, ExpiresAt: &exp, Source: "waf", Meta: model.Meta{Revision: 6}},
		},
		Policies: []*model.Policy{
			{ID: "p-named", Rules: []model.PolicyRule{{Expression: `request.method == "DELETE"`, Action: "deny"}},
				DenyCountries: []string{"xx"}, Meta: model.Meta{Revision: 7}},
			{ID: "p-global", AllowCountries: []string{"de", "fr"}, Meta: model.Meta{Revision: 8}},
		},
		RateLimits: []*model.RateLimit{
			{ID: "rl-1", RequestsPerUnit: 10, TimeUnit: model.Duration(time.Second), By: "user", Meta: model.Meta{Revision: 9}},
			{ID: "rl-g", RequestsPerUnit: 100, TimeUnit: model.Duration(time.Second), By: "ip", Meta: model.Meta{Revision: 10}},
		},
		APIKeys: []*model.APIKey{{ID: "k1", Name: "k1", Scopes: []string{"read"}, Meta: model.Meta{Revision: 11}}},
		Tenants: []*model.Tenant{{ID: "acme", Meta: model.Meta{Revision: 12}}},
	}
	if mod != nil {
		mod(s)
	}
	return s
}

// servingPipeline is the serve wiring of the three real consumers, and a last consumer that
// records each IR they were given.
func servingPipeline(t *testing.T) (p *pipeline.Pipeline, to translate.Options, committed, prepared func() *ir.Config) {
	log := slog.New(slog.DiscardHandler)
	to = translate.Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return memoT0 }}
	xs, err := server.New(server.Options{Translate: to, Logger: log, Registerer: prometheus.NewRegistry(), Now: to.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { xs.Close() })
	eng, err := extauthz.New(extauthz.Options{Logger: log, Registerer: prometheus.NewRegistry(), Clock: to.Now})
	if err != nil {
		t.Fatal(err)
	}
	rl := pipeline.RevisionFunc{N: "ratelimit", F: func(_ context.Context, rev *pipeline.Revision) (func(), error) {
		_, err := ratelimit.BuildRulesFromIR(rev.IR)
		return func() {}, err
	}}
	var mu sync.Mutex
	var last, prep *ir.Config
	spy := pipeline.RevisionFunc{N: "spy", F: func(_ context.Context, rev *pipeline.Revision) (func(), error) {
		mu.Lock()
		prep = rev.IR
		mu.Unlock()
		return func() { // a check runs F too, and drops the commit
			mu.Lock()
			last = rev.IR
			mu.Unlock()
		}, nil
	}}
	p = pipeline.New(nil, log, xs, eng, rl, spy)
	p.SetTranslate(to)
	read := func(c **ir.Config) func() *ir.Config {
		return func() *ir.Config {
			mu.Lock()
			defer mu.Unlock()
			return *c
		}
	}
	return p, to, read(&last), read(&prep)
}

// TestConsumersLeaveTheMemoizedIRAlone: the translation of a route is shared by every
// revision its inputs do not change, so a consumer that wrote into the IR it was given (a
// sort in place, a map filled, a slice appended to) would change the routes of later
// revisions. After revisions through all three consumers, the IR they were given must still
// equal a fresh translation.
func TestConsumersLeaveTheMemoizedIRAlone(t *testing.T) {
	p, to, last, _ := servingPipeline(t)
	ctx := context.Background()
	exp := memoT0.Add(2 * time.Hour)
	revs := []*model.Snapshot{
		securityModel(20, nil),
		securityModel(21, func(s *model.Snapshot) { // a ban: no route translated
			s.IPRules = append(s.IPRules, &model.IPRule{ID: "waf-2", Action: "deny", CIDRs: []string{"198.51.100.2"},
				ExpiresAt: &exp, Source: "waf", Meta: model.Meta{Revision: 21}})
		}),
		securityModel(22, func(s *model.Snapshot) { // a heartbeat: no route translated
			s.Services[0].LastHeartbeat, s.Services[0].Revision = memoT0, 22
		}),
	}
	for _, snap := range revs {
		if err := p.ApplySnapshot(ctx, snap); err != nil {
			t.Fatal(err)
		}
		want, err := translate.Translate(snap, to)
		if err != nil {
			t.Fatal(err)
		}
		if got := last(); !reflect.DeepEqual(got, want) {
			t.Fatalf("revision %d: the IR the consumers were given changed under them:\n got: %+v\nwant: %+v", snap.Revision, got.Authz, want.Authz)
		}
	}
	if st := p.TranslateStats(); st.Reused == 0 {
		t.Fatalf("stats %+v: no translation reused, the test proves nothing", st)
	}
}

// TestCheckTranslatesTheWouldBeRevision: a write's would-be revision carries objects whose
// revision is not the store's (a PUT's route may keep the revision it replaces until it is
// stored; the API does not promise otherwise). Checking it must translate what it holds, not
// the served translation of that revision, and must not teach the served Translator its
// content: the next applied revision, which holds the stored route, is translated as stored.
func TestCheckTranslatesTheWouldBeRevision(t *testing.T) {
	p, to, last, prepared := servingPipeline(t)
	ctx := context.Background()
	if err := p.ApplySnapshot(ctx, securityModel(20, nil)); err != nil {
		t.Fatal(err)
	}
	rewrite := func(rev uint64) func(*model.Snapshot) {
		return func(s *model.Snapshot) {
			r := s.Routes[1]
			r.WAF, r.Tenant, r.Revision = nil, "evil", rev
			r.Conditions = []model.Condition{{PathPrefix: "/other"}}
		}
	}
	for _, wouldBe := range []*model.Snapshot{securityModel(20, rewrite(4)), securityModel(20, rewrite(50))} {
		if err := p.Check(ctx, wouldBe); err != nil {
			t.Fatal(err)
		}
		want, err := translate.Translate(wouldBe, to)
		if err != nil {
			t.Fatal(err)
		}
		if got := prepared(); !reflect.DeepEqual(got, want) {
			t.Fatalf("the check was given another revision's translation:\n%s", irDiff(got, want))
		}
	}
	// Stored at revision 50 with other content than the check's.
	next := securityModel(50, func(s *model.Snapshot) { s.Routes[1].Revision = 50 })
	if err := p.ApplySnapshot(ctx, next); err != nil {
		t.Fatal(err)
	}
	want, err := translate.Translate(next, to)
	if err != nil {
		t.Fatal(err)
	}
	if got := last(); !reflect.DeepEqual(got, want) {
		t.Fatalf("a checked revision's content was served for a stored revision:\n%s", irDiff(got, want))
	}
}

// TestCheckAndApplyConcurrently: the API checks writes from many requests while the pipeline
// applies revisions; the served Translator is shared (run with -race).
func TestCheckAndApplyConcurrently(t *testing.T) {
	p, to, last, _ := servingPipeline(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				snap := securityModel(100, func(s *model.Snapshot) {
					s.Routes[1].Tenant = fmt.Sprintf("w%d-%d", w, i)
				})
				if err := p.Check(ctx, snap); err != nil {
					t.Error(err)
					return
				}
				_ = p.CheckObject(snap.Routes[1], snap)
			}
		}()
	}
	var final *model.Snapshot
	for i := range 10 {
		rev := uint64(30 + i)
		final = securityModel(rev, func(s *model.Snapshot) {
			if i%2 == 1 {
				s.Routes[0].Auth.Scopes, s.Routes[0].Revision = []string{"write"}, rev
			}
		})
		if err := p.ApplySnapshot(ctx, final); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	want, err := translate.Translate(final, to)
	if err != nil {
		t.Fatal(err)
	}
	if got := last(); !reflect.DeepEqual(got, want) {
		t.Fatalf("the last applied IR differs from a fresh translation:\n%s", irDiff(got, want))
	}
}

// irDiff names the IR parts that differ.
func irDiff(a, b *ir.Config) string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	out := ""
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out += fmt.Sprintf("%s:\n  given: %+v\n  fresh: %+v\n", va.Type().Field(i).Name, va.Field(i).Interface(), vb.Field(i).Interface())
		}
	}
	return out
}
