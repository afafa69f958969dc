package extauthz

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/waf"
)

func revisionWithPolicies(n int, routeWAF *model.WAFSettings) *model.Snapshot {
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID},
		Routes: []*model.Route{publicRoute("guarded", func(r *model.Route) { r.WAF = routeWAF })}}
	for i := 0; i < n; i++ {
		snap.Policies = append(snap.Policies, &model.Policy{ID: fmt.Sprintf("p%03d", i), Rules: []model.PolicyRule{
			{Action: "deny", Expression: fmt.Sprintf(`request.headers["x-n"] == "%d" && request.path.startsWith("/admin")`, i)}}})
	}
	snap.Policies = append(snap.Policies, &model.Policy{ID: "broken", Rules: []model.PolicyRule{{Action: "deny", Expression: "((("}}})
	return snap
}

// The pipeline check the API runs on every write refuses exactly what Prepare refuses (a WAF
// that does not compile) and nothing else, without compiling policies or logging the
// entries a build leaves out (a broken policy's error was logged again on every write).
func TestCheckRevisionRefusesWhatPrepareRefusesQuietly(t *testing.T) {
	var logs bytes.Buffer
	reg := waf.NewRegistry(waf.RegistryOptions{Logger: quietLogger()})
	e, err := New(Options{WAF: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	good := revisionWithPolicies(3, &model.WAFSettings{})
	badRoute := revisionWithPolicies(3, &model.WAFSettings{CustomRules: "SecRule this is not seclang"})
	bad := revisionWithPolicies(3, nil)
	bad.Settings.WAF = &model.WAFSettings{CustomRules: "SecRule this is not seclang"}
	for _, snap := range []*model.Snapshot{good, badRoute, bad} {
		_, prepErr := e.Prepare(context.Background(), snap)
		logs.Reset()
		checkErr := e.CheckSnapshot(context.Background(), snap)
		if fmt.Sprint(prepErr) != fmt.Sprint(checkErr) {
			t.Fatalf("Prepare: %v; CheckRevision: %v", prepErr, checkErr)
		}
		if logs.Len() > 0 {
			t.Fatalf("CheckRevision logged: %s", logs.String())
		}
	}
	if e.CheckSnapshot(context.Background(), bad) == nil {
		t.Fatal("a global WAF that does not compile is not refused")
	}
	if err := e.CheckSnapshot(context.Background(), badRoute); err != nil {
		t.Fatalf("a route's own WAF that does not compile refuses the revision: %v", err)
	}
}

// A route whose own WAF rules do not compile (stored around the API's check, or by another
// version) fails closed alone: it denies every request with 500, while the revision, and
// every other route in it, applies.
func TestRouteWithInvalidWAFDeniesAloneInsteadOfRefusingTheRevision(t *testing.T) {
	reg := waf.NewRegistry(waf.RegistryOptions{Logger: quietLogger()})
	h := newHarness(t, Options{WAF: reg})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{
		publicRoute("broken", func(r *model.Route) { r.WAF = &model.WAFSettings{CustomRules: "SecRule this is not seclang"} }),
		publicRoute("plain", nil),
	}})
	resp := h.check(envoyReq{routeID: rid("broken"), path: "/broken"})
	if httpStatus(resp) != 500 || errCode(t, resp) != ReasonWAFInvalid {
		t.Fatalf("route with invalid WAF rules: %d %s", httpStatus(resp), resp.GetDeniedResponse().GetBody())
	}
	if st := httpStatus(h.check(envoyReq{routeID: rid("plain"), path: "/plain"})); st != 200 {
		t.Fatalf("another route: %d", st)
	}
}

func BenchmarkRevisionCheck(b *testing.B) {
	reg := waf.NewRegistry(waf.RegistryOptions{Logger: quietLogger()})
	e, err := New(Options{WAF: reg, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	snap := revisionWithPolicies(200, &model.WAFSettings{})
	b.Run("prepare", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := e.Prepare(context.Background(), snap); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("check", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := e.CheckSnapshot(context.Background(), snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
