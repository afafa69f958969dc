package translate

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

var memoT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// memoModel is a fresh model (new objects on each call, as a store decode makes them) with
// a revision on every object: public and authenticated routes, a route-scoped IP rule, a
// global WAF ban, named and naming policies, route and global rate limits, two instances.
func memoModel() *model.Snapshot {
	f := false
	exp := memoT0.Add(2 * time.Hour)
	svc := func(id, host string, rev uint64) *model.Service {
		return &model.Service{ID: id, Name: "svc-a", Host: host, Port: 8080, Meta: model.Meta{Revision: rev}}
	}
	ttl := func(s *model.Service) *model.Service {
		s.TTL, s.LastHeartbeat = model.Duration(time.Hour), memoT0
		return s
	}
	route := func(id string, rev uint64, mod func(*model.Route)) *model.Route {
		r := &model.Route{ID: id, Conditions: []model.Condition{{PathPrefix: "/" + id}}, Targets: []model.Target{{Service: "svc-a"}},
			RequireAuth: &f, Meta: model.Meta{Revision: rev}}
		if mod != nil {
			mod(r)
		}
		return r
	}
	return &model.Snapshot{Revision: 100,
		Settings: &model.Settings{ID: model.SettingsID, Meta: model.Meta{Revision: 1},
			RateLimit: &model.GlobalRateLimit{Policies: []string{"rl-g"}}},
		Services: []*model.Service{svc("a1", "10.0.0.1", 2), ttl(svc("a2", "10.0.0.2", 3))},
		Routes: []*model.Route{
			route("auth", 4, func(r *model.Route) {
				t := true
				r.RequireAuth = &t
				r.Auth = &model.RouteAuth{Methods: []string{"jwt"}, IPRules: []string{"r-ip"}, Policies: []string{"p-named"},
					ClaimsToHeaders: map[string]string{"sub": "X-Sub"}}
			}),
			route("pub", 5, nil),
			route("rl", 6, func(r *model.Route) { r.RateLimit = &model.RouteRateLimit{Policies: []string{"rl-1"}} }),
		},
		IPRules: []*model.IPRule{
			{ID: "r-ip", Action: "deny", CIDRs: []string{"192.0.2.0/24"}, Routes: []string{"auth"}, Meta: model.Meta{Revision: 7}},
			{ID: "waf-1", Action: "deny", CIDRs: []string{"198.51.100.1"}, ExpiresAt: &exp, Source: "waf", Meta: model.Meta{Revision: 8}},
		},
		Policies: []*model.Policy{
			{ID: "p-named", Rules: []model.PolicyRule{{Expression: "true", Action: "allow"}}, DenyCountries: []string{"xx"}, Meta: model.Meta{Revision: 9}},
		},
		RateLimits: []*model.RateLimit{
			{ID: "rl-1", RequestsPerUnit: 10, TimeUnit: model.Duration(time.Second), Meta: model.Meta{Revision: 10}},
			{ID: "rl-g", RequestsPerUnit: 100, TimeUnit: model.Duration(time.Second), Meta: model.Meta{Revision: 11}},
		},
	}
}

// TestTranslatorMemoIsExact changes each input a route's translation can read, one at a
// time, and requires the memoizing Translator's IR to equal a fresh translation's: a memo
// that served a stale route would be a security bug (a policy, an IP rule or ext_authz
// itself left off a route). A ban and a heartbeat must translate no route.
func TestTranslatorMemoIsExact(t *testing.T) {
	rev := uint64(1000)
	next := func() uint64 { rev++; return rev }
	byID := func(s *model.Snapshot, id string) *model.Route {
		for _, r := range s.Routes {
			if r.ID == id {
				return r
			}
		}
		panic(id)
	}
	cases := []struct {
		name string
		// change edits the snapshot (bumping the revision of each object it changes, as the
		// store does) and may move the clock.
		change func(s *model.Snapshot, now *time.Time)
		// none: no route may be translated again.
		none bool
	}{
		{"nothing", func(*model.Snapshot, *time.Time) {}, true},
		{"another ban", func(s *model.Snapshot, _ *time.Time) {
			exp := memoT0.Add(time.Hour)
			s.IPRules = append(s.IPRules, &model.IPRule{ID: "waf-2", Action: "deny", CIDRs: []string{"198.51.100.2"}, ExpiresAt: &exp, Meta: model.Meta{Revision: next()}})
		}, true},
		{"ban renewed", func(s *model.Snapshot, _ *time.Time) {
			exp := memoT0.Add(5 * time.Hour)
			s.IPRules[1].ExpiresAt, s.IPRules[1].Revision = &exp, next()
		}, true},
		{"heartbeat", func(s *model.Snapshot, _ *time.Time) {
			s.Services[0].LastHeartbeat, s.Services[0].Revision = memoT0, next()
		}, true},
		{"instance moved", func(s *model.Snapshot, _ *time.Time) {
			s.Services[1].Host, s.Services[1].Revision = "10.0.0.9", next()
		}, true},
		{"instance TTL lapses", func(_ *model.Snapshot, now *time.Time) { *now = now.Add(90 * time.Minute) }, true},
		{"instance unhealthy", func(s *model.Snapshot, _ *time.Time) {
			s.Services[0].Status, s.Services[0].Revision = "unhealthy", next()
		}, true},
		{"instance added", func(s *model.Snapshot, _ *time.Time) {
			s.Services = append(s.Services, &model.Service{ID: "a3", Name: "svc-a", Host: "10.0.0.3", Port: 8080, Meta: model.Meta{Revision: next()}})
		}, true},
		{"last ban expires", func(_ *model.Snapshot, now *time.Time) { *now = now.Add(3 * time.Hour) }, false},
		{"last ban deleted", func(s *model.Snapshot, _ *time.Time) { s.IPRules = s.IPRules[:1] }, false},
		{"rule names a public route", func(s *model.Snapshot, _ *time.Time) {
			s.IPRules = append(s.IPRules, &model.IPRule{ID: "r-pub", Action: "allow", CIDRs: []string{"10.0.0.0/8"}, Routes: []string{"pub"}, Meta: model.Meta{Revision: next()}})
		}, false},
		{"route rule becomes global", func(s *model.Snapshot, _ *time.Time) {
			s.IPRules[0].Routes, s.IPRules[0].Revision = nil, next()
		}, false},
		{"route rule expires", func(s *model.Snapshot, _ *time.Time) {
			exp := memoT0.Add(-time.Second)
			s.IPRules[0].ExpiresAt, s.IPRules[0].Revision = &exp, next()
		}, false},
		{"route rule deleted", func(s *model.Snapshot, _ *time.Time) { s.IPRules = s.IPRules[1:] }, false},
		{"global policy added", func(s *model.Snapshot, _ *time.Time) {
			s.Policies = append(s.Policies, &model.Policy{ID: "p-global", AllowCountries: []string{"de"}, Meta: model.Meta{Revision: next()}})
		}, false},
		{"policy names a route", func(s *model.Snapshot, _ *time.Time) {
			s.Policies = append(s.Policies, &model.Policy{ID: "p-pub", Routes: []string{"pub"}, DenyCountries: []string{"fr"}, Meta: model.Meta{Revision: next()}})
		}, false},
		{"named policy countries", func(s *model.Snapshot, _ *time.Time) {
			s.Policies[0].DenyCountries, s.Policies[0].Revision = []string{"yy"}, next()
		}, false},
		{"named policy disabled", func(s *model.Snapshot, _ *time.Time) {
			s.Policies[0].Disabled, s.Policies[0].Revision = true, next()
		}, false},
		{"identity headers", func(s *model.Snapshot, _ *time.Time) {
			s.Settings.Auth, s.Settings.Revision = &model.AuthSettings{IdentityHeaders: map[string]string{"user_id": " X-Who "}}, next()
		}, false},
		{"global WAF", func(s *model.Snapshot, _ *time.Time) {
			s.Settings.WAF, s.Settings.Revision = &model.WAFSettings{GeoblockingEnabled: true, BlockedCountries: []string{"zz"}}, next()
		}, false},
		{"route rate limit changed", func(s *model.Snapshot, _ *time.Time) {
			s.RateLimits[0].By, s.RateLimits[0].Revision = "ip", next()
		}, false},
		{"global rate limit changed", func(s *model.Snapshot, _ *time.Time) {
			s.RateLimits[1].By, s.RateLimits[1].Revision = "ip", next()
		}, false},
		{"named rate limit deleted", func(s *model.Snapshot, _ *time.Time) { s.RateLimits = s.RateLimits[1:] }, false},
		{"route changed", func(s *model.Snapshot, _ *time.Time) {
			r := byID(s, "pub")
			r.Tenant, r.Revision = "acme", next()
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			now := memoT0
			o := Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return now }}
			memo := NewTranslator(o)
			if _, err := memo.Translate(memoModel()); err != nil {
				t.Fatal(err)
			}
			before := memo.Stats()
			snap := memoModel()
			c.change(snap, &now)
			got, err := memo.Translate(snap)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Translate(snap, o)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("the memo's IR differs from a fresh translation:\n%s", irDiff(got, want))
			}
			translated := memo.Stats().Translated - before.Translated
			if c.none && translated != 0 {
				t.Fatalf("%d route(s) translated again", translated)
			}
			if !c.none && translated == 0 {
				t.Fatal("no route translated again, though an input changed")
			}
		})
	}
}

// irDiff names the first IR parts that differ.
func irDiff(a, b any) string {
	va, vb := reflect.Indirect(reflect.ValueOf(a)), reflect.Indirect(reflect.ValueOf(b))
	out := ""
	for i := 0; i < va.NumField(); i++ {
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out += fmt.Sprintf("%s:\n  memo:  %+v\n  fresh: %+v\n", va.Type().Field(i).Name, va.Field(i).Interface(), vb.Field(i).Interface())
		}
	}
	return out
}

// TestTranslatorMemoNeedsRevisions: objects without a store revision (built in memory) are
// never memoized, since nothing names their content.
func TestTranslatorMemoNeedsRevisions(t *testing.T) {
	tr := NewTranslator(Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return memoT0 }})
	for range 2 {
		s := memoModel()
		s.Routes[0].Revision = 0
		if _, err := tr.Translate(s); err != nil {
			t.Fatal(err)
		}
	}
	if st := tr.Stats(); st.Translated != 3+1 || st.Reused != 2 {
		t.Fatalf("stats %+v: the route without a revision must be translated each time", st)
	}
}

// TestTranslatorMemoWithoutStoredSettings: a store that holds no settings object decodes
// to default settings without a revision (model.Decode). Those settings are no input, so a
// ban must still translate no route; memoizing nothing there made every ban and heartbeat
// translate every route of a gateway never given settings.
func TestTranslatorMemoWithoutStoredSettings(t *testing.T) {
	st := &memoStore{objs: map[model.Kind]map[string]model.RawObject{}}
	f := false
	for _, id := range []string{"a", "b"} {
		st.put(model.KindRoutes, &model.Route{ID: id, RequireAuth: &f, Conditions: []model.Condition{{PathPrefix: "/" + id}},
			Targets: []model.Target{{Host: "10.0.0.1", Port: 80}}})
	}
	o := Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return memoT0 }}
	tr := NewTranslator(o)
	if _, err := tr.Translate(st.snapshot()); err != nil {
		t.Fatal(err)
	}
	exp := memoT0.Add(time.Hour)
	st.put(model.KindIPRules, &model.IPRule{ID: "waf-1", Action: "deny", CIDRs: []string{"198.51.100.1"}, ExpiresAt: &exp, Source: "waf"})
	st.put(model.KindIPRules, &model.IPRule{ID: "waf-2", Action: "deny", CIDRs: []string{"198.51.100.2"}, ExpiresAt: &exp, Source: "waf"})
	if _, err := tr.Translate(st.snapshot()); err != nil { // the first ban turns ext_authz on
		t.Fatal(err)
	}
	before := tr.Stats()
	st.put(model.KindIPRules, &model.IPRule{ID: "waf-3", Action: "deny", CIDRs: []string{"198.51.100.3"}, ExpiresAt: &exp, Source: "waf"})
	got, err := tr.Translate(st.snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if n := tr.Stats().Translated - before.Translated; n != 0 {
		t.Fatalf("a ban translated %d route(s) again", n)
	}
	want, err := Translate(st.snapshot(), o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the memo's IR differs from a fresh translation:\n%s", irDiff(got, want))
	}
}

// TestSettingsFieldsAreMemoInputs: newInputs keys settings with none of Auth, WAF and
// RateLimit as "none" whatever their revision; a new settings field would be an input
// that key leaves out.
func TestSettingsFieldsAreMemoInputs(t *testing.T) {
	known := map[string]bool{"ID": true, "Auth": true, "WAF": true, "RateLimit": true, "Meta": true}
	ty := reflect.TypeOf(model.Settings{})
	for i := 0; i < ty.NumField(); i++ {
		if !known[ty.Field(i).Name] {
			t.Errorf("settings field %s: say in newInputs (translate/authz.go) whether it is an input of a route's translation", ty.Field(i).Name)
		}
	}
}

// TestTranslatorMemoAfterStoreLostWrites: a store revision names an object's content only
// within one history of the store. Redis that lost acknowledged writes (restarted without
// persistence, restored from a backup) counts revisions again from a lower number, and a
// replica started after the loss writes at revisions this Translator has already seen: the
// same id at the same revision with other content. Its write time tells them apart.
func TestTranslatorMemoAfterStoreLostWrites(t *testing.T) {
	o := Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return memoT0 }}
	tr := NewTranslator(o)
	if _, err := tr.Translate(memoModel()); err != nil {
		t.Fatal(err)
	}
	// After the loss, route "pub" was written again at its old revision (5) by another
	// replica: now it requires a credential and belongs to a tenant.
	snap := memoModel()
	for _, r := range snap.Routes {
		if r.ID == "pub" {
			r.RequireAuth, r.Tenant, r.UpdatedAt = nil, "acme", memoT0.Add(time.Minute)
		}
	}
	got, err := tr.Translate(snap)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Translate(snap, o)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the memo served the lost write's translation:\n%s", irDiff(got, want))
	}
}
