package discovery_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/discovery"
	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

func putRule(t *testing.T, st store.Store, r *model.IPRule) {
	t.Helper()
	data, _ := json.Marshal(r)
	if _, err := store.Put(t.Context(), st, model.KindIPRules, r.ID, data, 0); err != nil {
		t.Fatal(err)
	}
}

func ruleIDs(t *testing.T, st store.Store) map[string]bool {
	t.Helper()
	raws, err := st.List(t.Context(), model.KindIPRules)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range raws {
		out[r.ID] = true
	}
	return out
}

func banID(t *testing.T, ip string) string {
	t.Helper()
	r, err := extauthz.WAFDenyRule(ip, time.Now(), "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// IsWAFBan accepts exactly what the WAF's deny writes (extauthz.WAFDenyRule), whatever the
// address family, and no rule an operator wrote, even one that looks like a ban.
func TestIsWAFBanMatchesTheWAFsRules(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, ip := range []string{"203.0.113.7", "2001:db8::1", "::ffff:198.51.100.2", " 192.0.2.1 "} {
		r, err := extauthz.WAFDenyRule(ip, now.Add(time.Hour), "sqli x5", now)
		if err != nil {
			t.Fatal(err)
		}
		if !discovery.IsWAFBan(r) {
			t.Fatalf("the WAF's ban of %q is not recognized: %+v", ip, r)
		}
		// Any field an operator's rule would differ in makes it not a ban.
		for name, mutate := range map[string]func(*model.IPRule){
			"source api":     func(r *model.IPRule) { r.Source = "api" },
			"no source":      func(r *model.IPRule) { r.Source = "" },
			"allow":          func(r *model.IPRule) { r.Action = "allow" },
			"no expiry":      func(r *model.IPRule) { r.ExpiresAt = nil },
			"own id":         func(r *model.IPRule) { r.ID = "block-" + r.ID },
			"two entries":    func(r *model.IPRule) { r.CIDRs = append(r.CIDRs, "10.0.0.1") },
			"a network":      func(r *model.IPRule) { r.CIDRs = []string{r.CIDRs[0] + "/24"} },
			"another client": func(r *model.IPRule) { r.CIDRs = []string{"10.9.9.9"} },
			"some routes":    func(r *model.IPRule) { r.Routes = []string{"admin"} },
		} {
			c := *r
			c.CIDRs = append([]string(nil), r.CIDRs...)
			mutate(&c)
			if discovery.IsWAFBan(&c) {
				t.Fatalf("%s: %q recognized as a WAF ban: %+v", name, ip, c)
			}
		}
	}
	if discovery.IsWAFBan(nil) {
		t.Fatal("nil is a ban")
	}
}

// Expired bans go after the grace, all in one revision, counted; bans not yet expired and
// operators' rules (expired or looking like bans) stay.
func TestBanSweeperDeletesExpiredBansOnly(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	t0 := clk.Now()
	ctx := t.Context()
	denier := &extauthz.StoreIPDenier{Store: st, Now: clk.Now}
	expiring := []string{"203.0.113.1", "203.0.113.2", "2001:db8::3"}
	for _, ip := range expiring {
		if err := denier.DenyIP(ctx, ip, t0.Add(time.Minute), "repeat offender"); err != nil {
			t.Fatal(err)
		}
	}
	if err := denier.DenyIP(ctx, "203.0.113.9", t0.Add(time.Hour), "repeat offender"); err != nil {
		t.Fatal(err)
	}
	past := t0.Add(-time.Hour)
	putRule(t, st, &model.IPRule{ID: "office-trial", Action: "deny", CIDRs: []string{"198.51.100.0/24"}, ExpiresAt: &past})
	putRule(t, st, &model.IPRule{ID: "manual-waf", Action: "deny", CIDRs: []string{"198.51.100.7"}, ExpiresAt: &past, Source: "waf"})
	bs := &discovery.BanSweeper{Store: st, Log: quietLog(), Now: clk.Now}

	clk.Add(time.Minute + 5*time.Second) // expired, within the grace
	if res, err := bs.Sweep(ctx); err != nil || res.Deleted != 0 {
		t.Fatalf("within the grace: %+v %v", res, err)
	}
	clk.Add(6 * time.Second)
	before, _ := st.Revision(ctx)
	res, err := bs.Sweep(ctx)
	if err != nil || res.Deleted != len(expiring) || res.Conflicts != 0 {
		t.Fatalf("after the grace: %+v %v", res, err)
	}
	if after, _ := st.Revision(ctx); after != before+1 {
		t.Fatalf("%d bans took %d revisions, want 1", len(expiring), after-before)
	}
	ids := ruleIDs(t, st)
	for _, ip := range expiring {
		if ids[banID(t, ip)] {
			t.Fatalf("expired ban of %s still stored", ip)
		}
	}
	for _, id := range []string{banID(t, "203.0.113.9"), "office-trial", "manual-waf"} {
		if !ids[id] {
			t.Fatalf("%s was deleted", id)
		}
	}
	if res, _ := bs.Sweep(ctx); res.Deleted != 0 {
		t.Fatalf("second sweep: %+v", res)
	}
}

// renewDuringSweep bans one client again right after the sweeper listed the rules: the
// sweeper's delete of that ban, conditional on the revision it read, must lose.
type renewDuringSweep struct {
	store.Store
	once   sync.Once
	renew  func(ctx context.Context) error
	t      *testing.T
	txns   int
	failed int
	mu     sync.Mutex
}

func (r *renewDuringSweep) List(ctx context.Context, k model.Kind) ([]model.RawObject, error) {
	out, err := r.Store.List(ctx, k)
	if k == model.KindIPRules {
		r.once.Do(func() {
			if err := r.renew(ctx); err != nil {
				r.t.Error(err)
			}
		})
	}
	return out, err
}

func (r *renewDuringSweep) Txn(ctx context.Context, ops []store.Op) (uint64, error) {
	rev, err := r.Store.Txn(ctx, ops)
	r.mu.Lock()
	r.txns++
	if err != nil {
		r.failed++
	}
	r.mu.Unlock()
	return rev, err
}

func TestBanSweeperKeepsARenewedBan(t *testing.T) {
	st := openBolt(t)
	clk := newClock()
	t0 := clk.Now()
	ctx := t.Context()
	denier := &extauthz.StoreIPDenier{Store: st, Now: clk.Now}
	for _, ip := range []string{"203.0.113.1", "203.0.113.2", "203.0.113.3"} {
		if err := denier.DenyIP(ctx, ip, t0.Add(time.Minute), "repeat offender"); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(time.Hour)
	rs := &renewDuringSweep{Store: st, t: t, renew: func(ctx context.Context) error {
		return denier.DenyIP(ctx, "203.0.113.2", clk.Now().Add(time.Hour), "back again")
	}}
	bs := &discovery.BanSweeper{Store: rs, Log: quietLog(), Now: clk.Now}
	res, err := bs.Sweep(ctx)
	if err != nil || res.Deleted != 2 || res.Conflicts != 1 {
		t.Fatalf("%+v %v", res, err)
	}
	raw, err := st.Get(ctx, model.KindIPRules, banID(t, "203.0.113.2"))
	if err != nil {
		t.Fatalf("the renewed ban was deleted: %v", err)
	}
	var r model.IPRule
	_ = json.Unmarshal(raw.Data, &r)
	if r.ExpiresAt == nil || !r.ExpiresAt.After(clk.Now()) {
		t.Fatalf("renewed ban: %+v", r)
	}
	for _, ip := range []string{"203.0.113.1", "203.0.113.3"} {
		if _, err := st.Get(ctx, model.KindIPRules, banID(t, ip)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("ban of %s: %v", ip, err)
		}
	}
	if rs.txns != 2 || rs.failed != 1 {
		t.Fatalf("transactions %d (failed %d): want the batch refused once and retried without the renewed ban", rs.txns, rs.failed)
	}
}
