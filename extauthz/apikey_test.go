package extauthz

import (
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/model"
)

func TestAPIKeySecrets(t *testing.T) {
	seen := map[string]bool{}
	for _, id := range []string{"k7x2", "team_a.key-1", "a"} {
		secret, hash, err := NewAPIKeySecret(id)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, "agw_"+id+"_") || len(secret) != len("agw_")+len(id)+1+apiKeyRandChars {
			t.Fatalf("secret shape %q", secret)
		}
		if !strings.HasPrefix(hash, "sha256:") || len(hash) != len("sha256:")+64 || strings.Contains(hash, secret) {
			t.Fatalf("hash %q", hash)
		}
		got, ok := ParseAPIKey(secret)
		if !ok || got != id {
			t.Fatalf("ParseAPIKey(%q) = %q %v", secret, got, ok)
		}
		if !VerifyAPIKey(secret, hash) || VerifyAPIKey(secret+"x", hash) || VerifyAPIKey(secret, "sha256:00") {
			t.Fatal("verification")
		}
		if seen[secret] {
			t.Fatal("repeated secret")
		}
		seen[secret] = true
	}
	for _, bad := range []string{"", "agw_", "agw_id_short", "xyz_id_" + strings.Repeat("a", 43), "agw__" + strings.Repeat("a", 43),
		"agw_id_" + strings.Repeat("a", 42) + "!"} {
		if _, ok := ParseAPIKey(bad); ok {
			t.Errorf("ParseAPIKey(%q) accepted", bad)
		}
	}
	if _, _, err := NewAPIKeySecret(""); err == nil {
		t.Fatal("empty id accepted")
	}
	var m KeyMinter
	if s, h, err := m.NewSecret("z"); err != nil || !VerifyAPIKey(s, h) {
		t.Fatal("KeyMinter")
	}
}

// TestChangesApplyOnNextCheck: a key created, then revoked, takes effect on the next Check
// after the snapshot swap.
func TestChangesApplyOnNextCheck(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{route("r", nil)}})
	k, s := newKey(t, "fresh", nil)
	req := envoyReq{routeID: rid("r"), headers: map[string]string{"x-api-key": s}}
	if st := httpStatus(h.check(req)); st != 401 {
		t.Fatalf("before create: %d", st)
	}
	h.apply(&model.Snapshot{Revision: 2, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{k}})
	if st := httpStatus(h.check(req)); st != 200 {
		t.Fatalf("after create: %d", st)
	}
	rk := *k
	rk.Revoked = true
	h.apply(&model.Snapshot{Revision: 3, Routes: []*model.Route{route("r", nil)}, APIKeys: []*model.APIKey{&rk}})
	if st := httpStatus(h.check(req)); st != 401 {
		t.Fatalf("after revoke: %d", st)
	}
}

func TestTimeWindowSpansMidnight(t *testing.T) {
	w := timeWindow{loc: mustLoc(t, "America/New_York"), start: 22 * 60, end: 6 * 60, days: 1 << 5} // Friday nights
	for _, c := range []struct {
		at   string
		want bool
	}{
		{"2026-03-06T23:30:00-05:00", true},  // Fri 23:30
		{"2026-03-07T05:59:00-05:00", true},  // Sat 05:59, Friday's window
		{"2026-03-07T06:00:00-05:00", false}, // window closed
		{"2026-03-07T23:00:00-05:00", false}, // Saturday night
		{"2026-03-06T21:59:00-05:00", false},
	} {
		at, err := parseTime(c.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := w.in(at.UTC()); got != c.want {
			t.Errorf("%s: %v", c.at, got)
		}
	}
}
