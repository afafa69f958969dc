package discovery_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/discovery"
	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// Two replicas on one redis-server, one lease. Heartbeats recorded on one replica keep an
// instance alive for the sweeping one without a single revision; when they stop, the
// instance is marked expired once. An expired WAF ban written through one replica is
// deleted once, counted once; an operator's expired rule stays.
func TestReplicasShareLivenessAndBanRemoval(t *testing.T) {
	rs := testutil.StartRedis(t)
	clk := newClock()
	type replica struct {
		st  *store.Redis
		reg *prometheus.Registry
	}
	var reps []*replica
	for i := 0; i < 2; i++ {
		st, err := store.OpenRedisStore(t.Context(), "redis://"+rs.Addr, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		reg := prometheus.NewRegistry()
		srv, err := discovery.NewServer(discovery.ServerOptions{Store: st, Log: quietLog(), Reg: reg,
			Lease:         discovery.NewRedisLease(st.Client(), st.Prefix()+":lease:discovery", 5*time.Second),
			SweepInterval: 10 * time.Millisecond, BanInterval: 10 * time.Millisecond, Now: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
		reps = append(reps, &replica{st: st, reg: reg})
	}
	sum := func(name string) float64 {
		var n float64
		for _, r := range reps {
			n += metricValue(r.reg, name)
		}
		return n
	}
	eventually(t, 2*time.Second, "one leader", func() bool { return sum("api_gateway_discovery_leader") == 1 })
	ctx := t.Context()
	putSvc(t, reps[0].st, &model.Service{ID: "a", Name: "svc", Host: "10.0.0.1", Port: 80, TTL: model.Duration(10 * time.Second), LastHeartbeat: clk.Now()})
	rev, _ := reps[0].st.Revision(ctx)
	for i := 0; i < 10; i++ { // 50 s of heartbeats every 5 s, recorded on the second replica
		clk.Add(5 * time.Second)
		if err := reps[1].st.Touch(ctx, "a", clk.Now()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond) // a few sweeps at this time
	}
	if rev2, _ := reps[0].st.Revision(ctx); rev2 != rev {
		t.Fatalf("heartbeats made revisions: %d -> %d", rev, rev2)
	}
	if a := getSvc(t, reps[0].st, "a"); a.Status != "" {
		t.Fatalf("live instance swept: %+v", a)
	}
	clk.Add(11 * time.Second)
	eventually(t, 2*time.Second, "expiry", func() bool { return getSvc(t, reps[1].st, "a").Status == model.StatusExpired })
	if n := sum("api_gateway_discovery_expired_total"); n != 1 {
		t.Fatalf("expired %v times", n)
	}

	denier := &extauthz.StoreIPDenier{Store: reps[1].st, Now: clk.Now}
	if err := denier.DenyIP(ctx, "203.0.113.5", clk.Now().Add(time.Minute), "repeat offender"); err != nil {
		t.Fatal(err)
	}
	past := clk.Now().Add(-time.Hour)
	putRule(t, reps[1].st, &model.IPRule{ID: "operator-block", Action: "deny", CIDRs: []string{"198.51.100.7"}, ExpiresAt: &past})
	time.Sleep(50 * time.Millisecond)
	if !ruleIDs(t, reps[0].st)[banID(t, "203.0.113.5")] {
		t.Fatal("a ban was deleted before it expired")
	}
	clk.Add(time.Minute + discovery.DefaultBanGrace + time.Second)
	eventually(t, 2*time.Second, "ban removal", func() bool {
		_, err := reps[0].st.Get(ctx, model.KindIPRules, banID(t, "203.0.113.5"))
		return errors.Is(err, store.ErrNotFound)
	})
	time.Sleep(50 * time.Millisecond)
	if n := sum("api_gateway_waf_bans_deleted_total"); n != 1 {
		t.Fatalf("bans deleted %v times, want 1", n)
	}
	if !ruleIDs(t, reps[0].st)["operator-block"] {
		t.Fatal("an operator's expired rule was deleted")
	}
}
