package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/ratelimit"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/translate"
)

func limitsJSON(prefix string, n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf(`{"id":"%s%d","algorithm":"fixed_window","requests_per_unit":5,"time_unit":"1m","by":"ip"}`, prefix, i)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func capRouteJSON(id string, own int) string {
	rl := ""
	if own > 0 {
		rl = `,"rate_limit":{"limits":` + limitsJSON(id+"-", own) + `}`
	}
	return `{"id":"` + id + `","conditions":[{"path_prefix":"/` + id + `"}],"targets":[{"host":"127.0.0.1","port":9001}],"require_auth":false` + rl + `}`
}

// TestStoredRouteOverTheRateLimitCap: a store written by an older version, before the
// per-scope caps, holds settings with 64 global limits and a route with one of its own: 65
// descriptors, past what the rate-limit service enforces (Envoy would fail open: the route
// unlimited). The gateway serves the rest and leaves that route out, saying why in its
// status; unrelated writes go through; a write that would add such a route is refused at its
// field with the numbers, and one whose revision would (creating a policy a stored route names)
// answers 409 naming the route; removing the global limits brings the route back.
func TestStoredRouteOverTheRateLimitCap(t *testing.T) {
	cfg := gatewayConfig(t)
	st, err := store.OpenBolt(filepath.Join(cfg.DataDir, "gateway.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, o := range []struct {
		kind     model.Kind
		id, body string
	}{
		{model.KindSettings, model.SettingsID, `{"id":"global","rate_limit":{"limits":` + limitsJSON("g", ratelimit.MaxDescriptors) + `}}`},
		{model.KindRoutes, "legacy", capRouteJSON("legacy", 1)},
		// Names a policy that does not exist (left out of its rate limits until it does).
		{model.KindRoutes, "dangling", `{"id":"dangling","conditions":[{"path_prefix":"/dangling"}],"targets":[{"host":"127.0.0.1","port":9001}],"require_auth":false,"rate_limit":{"policies":["later"]}}`},
	} {
		if _, err := store.Put(ctx, st, o.kind, o.id, []byte(o.body), 0); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()

	var logs syncBuf
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(runCtx, cfg, slog.New(slog.NewJSONHandler(&logs, nil))) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	g := &inProcessGateway{base: fmt.Sprintf("http://127.0.0.1:%d", cfg.Port), token: cfg.AdminToken}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if res, err := http.Get(g.base + "/ready"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break // the revision is served, not refused
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready (a stored route past the cap must not refuse the revision):\n%s", logs.String())
		}
	}
	translation := func(id string) string {
		code, body := g.do(t, "GET", "/api/v1/management/routes/"+id, nil)
		if code != 200 {
			t.Fatalf("GET routes/%s: %d %s", id, code, body)
		}
		var r model.Route
		if err := json.Unmarshal(body, &r); err != nil || r.Status == nil {
			t.Fatalf("GET routes/%s: %v %s", id, err, body)
		}
		return r.Status.Translation
	}
	if got := translation("legacy"); !strings.Contains(got, "65 rate limits apply to this route") || !strings.Contains(got, "at most 64") {
		t.Fatalf("legacy route translation %q: want it left out for its rate limits", got)
	}
	if !strings.Contains(logs.String(), "routes/legacy: rate_limit: 65 rate limits apply") {
		t.Fatalf("the rate-limit service does not report the route:\n%s", logs.String())
	}

	// An unrelated write is not held hostage by the stored problem.
	if code, body := g.do(t, "POST", "/api/v1/management/routes", []byte(capRouteJSON("free", 0))); code != 201 {
		t.Fatalf("POST a route without limits of its own (64 global, at the cap): %d %s", code, body)
	}
	// A write that would add a route past the cap is refused, at its field, with the numbers.
	code, body := g.do(t, "POST", "/api/v1/management/routes", []byte(capRouteJSON("over", 1)))
	var eb manage.ErrorBody
	if code != http.StatusBadRequest || json.Unmarshal(body, &eb) != nil {
		t.Fatalf("POST a route past the cap: %d %s", code, body)
	}
	found := false
	for _, d := range eb.Error.Details {
		if d.Field == "rate_limit" && strings.Contains(d.Problem, "65 rate limits apply (1 of the route's own, 64 global), of at most 64") {
			found = true
		}
	}
	if !found {
		t.Fatalf("POST a route past the cap: no rate_limit problem with the numbers: %s", body)
	}
	// One problem, said once: the xDS check leaves the caps to the rate-limit consumer.
	if len(eb.Error.Details) != 1 {
		t.Fatalf("POST a route past the cap: want the one rate_limit problem, got %d: %s", len(eb.Error.Details), body)
	}
	if code, _ := g.do(t, "GET", "/api/v1/management/routes/over", nil); code != http.StatusNotFound {
		t.Fatalf("the refused route was stored: GET %d", code)
	}

	// Creating the policy the stored route names would put that route past the cap: the
	// object is fine, the revision is not; refused whole, naming the route, nothing stored.
	code, body = g.do(t, "POST", "/api/v1/management/rate-limits", []byte(`{"id":"later","algorithm":"fixed_window","requests_per_unit":5,"time_unit":"1m","by":"ip"}`))
	eb = manage.ErrorBody{}
	if code != http.StatusConflict || json.Unmarshal(body, &eb) != nil || eb.Error.Code != manage.CodeRevisionRefused ||
		!strings.Contains(string(body), "routes/dangling: rate_limit: 65 rate limits apply") {
		t.Fatalf("POST the policy a stored route names: %d %s", code, body)
	}
	if code, _ := g.do(t, "GET", "/api/v1/management/rate-limits/later", nil); code != http.StatusNotFound {
		t.Fatalf("the refused policy was stored: GET %d", code)
	}
	if got := translation("dangling"); got != "ok" {
		t.Fatalf("dangling route after the refused write: %q", got)
	}

	// Fewer global limits: the stored route is served again.
	if code, body := g.do(t, "PUT", "/api/v1/management/settings", []byte(`{"rate_limit":{"limits":`+limitsJSON("g", 3)+`}}`)); code != 200 {
		t.Fatalf("PUT settings: %d %s", code, body)
	}
	if got := translation("legacy"); got != "ok" {
		t.Fatalf("legacy route after the settings write: %q", got)
	}
}

// TestRateLimitConsumerRefusesOnlyNewProblems: a revision with a problem the rate-limit
// service leaves out is applied (PrepareRevision never refuses: what does not apply is left
// out and reported, as per-route errors are); a write's revision is refused when it adds a
// problem to the served revision's, and not for one already served.
func TestRateLimitConsumerRefusesOnlyNewProblems(t *testing.T) {
	var settings model.Settings
	if fe := model.DecodeStrict([]byte(`{"id":"global","rate_limit":{"limits":`+limitsJSON("g", ratelimit.MaxDescriptors)+`}}`), &settings); len(fe) > 0 {
		t.Fatal(fe)
	}
	route := func(id string, own int) *model.Route {
		var r model.Route
		if fe := model.DecodeStrict([]byte(capRouteJSON(id, own)), &r); len(fe) > 0 {
			t.Fatal(fe)
		}
		return &r
	}
	rev := func(routes ...*model.Route) *pipeline.Revision {
		snap := &model.Snapshot{Revision: 1, Settings: &settings, Routes: routes}
		cfg, err := translate.Translate(snap, translate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return &pipeline.Revision{Snap: snap, IR: cfg}
	}
	c := newRateLimitConsumer(nil, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	if err := c.CheckRevision(ctx, rev(route("a", 1))); err == nil || !strings.Contains(err.Error(), "routes/a: rate_limit: 65 rate limits apply") {
		t.Fatalf("nothing served yet, a route past the cap: %v", err)
	}
	commit, err := c.PrepareRevision(ctx, rev(route("a", 1)))
	if err != nil {
		t.Fatalf("a stored route past the cap refused the revision: %v", err)
	}
	commit()
	if err := c.CheckRevision(ctx, rev(route("a", 1), route("b", 0))); err != nil {
		t.Fatalf("a write adding a route within the cap, next to a served problem: %v", err)
	}
	err = c.CheckRevision(ctx, rev(route("a", 1), route("c", 2)))
	if err == nil || !strings.Contains(err.Error(), "routes/c: rate_limit: 66 rate limits apply") || strings.Contains(err.Error(), "routes/a") {
		t.Fatalf("a write adding a route past the cap: %v", err)
	}
}
