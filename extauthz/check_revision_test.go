package extauthz

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/api-gateway/api-gateway/proto/model"
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
	bad := revisionWithPolicies(3, &model.WAFSettings{CustomRules: "SecRule this is not seclang"})
	for _, snap := range []*model.Snapshot{good, bad} {
		_, prepErr := e.Prepare(context.Background(), snap)
		logs.Reset()
		checkErr := e.CheckRevision(context.Background(), snap)
		if fmt.Sprint(prepErr) != fmt.Sprint(checkErr) {
			t.Fatalf("Prepare: %v; CheckRevision: %v", prepErr, checkErr)
		}
		if logs.Len() > 0 {
			t.Fatalf("CheckRevision logged: %s", logs.String())
		}
	}
	if e.CheckRevision(context.Background(), bad) == nil {
		t.Fatal("a WAF that does not compile is not refused")
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
			if err := e.CheckRevision(context.Background(), snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
