package waf

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/api-gateway/api-gateway/model"
)

// fakeClock is a manually advanced clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// denial is one IPDenier call.
type denial struct {
	ip     string
	until  time.Time
	reason string
}

// recordingDenier records DenyIP calls (the gateway wires the store's ip-rules here).
type recordingDenier struct {
	mu    sync.Mutex
	calls []denial
}

func (d *recordingDenier) DenyIP(_ context.Context, ip string, until time.Time, reason string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, denial{ip, until, reason})
	return nil
}

func (d *recordingDenier) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.calls)
}

func TestRepeatOffenderDeniedThenReleased(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)}
	denier := &recordingDenier{}
	promReg := prometheus.NewRegistry()
	metrics, err := NewMetrics(promReg)
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry(RegistryOptions{Logger: quiet, Metrics: metrics, Tracker: NewTracker(denier, clock.Now, quiet)})
	rw, err := reg.ForRoute("orders", &model.WAFSettings{
		BlockMaliciousIPs:      true,
		MaliciousIPThreshold:   3,
		MaliciousIPWindow:      model.Duration(time.Minute),
		MaliciousIPBanDuration: model.Duration(10 * time.Minute),
	})
	if err != nil {
		t.Fatal(err)
	}
	attack := req{uri: "/items?id=" + url.QueryEscape("1 UNION SELECT password FROM users--")}.check()
	benign := req{uri: "/items?id=42"}.check()
	ctx := context.Background()
	const ip = "198.51.100.20" // the source address of test requests

	// Two detections, then the window passes: no ban.
	rw.Check(ctx, attack, "")
	clock.Advance(30 * time.Second)
	rw.Check(ctx, attack, "")
	clock.Advance(61 * time.Second)
	if v := rw.Check(ctx, attack, ""); v.Allowed || v.Category != CategorySQLi {
		t.Fatalf("attack: %+v", v)
	}
	if denier.count() != 0 {
		t.Fatalf("denied before the threshold within the window: %+v", denier.calls)
	}
	// Two more within the window make three: denied until now+10m.
	clock.Advance(10 * time.Second)
	rw.Check(ctx, attack, "")
	clock.Advance(10 * time.Second)
	rw.Check(ctx, attack, "")
	if denier.count() != 1 {
		t.Fatalf("want one DenyIP call, got %+v", denier.calls)
	}
	d := denier.calls[0]
	if d.ip != ip || !d.until.Equal(clock.Now().Add(10*time.Minute)) || d.reason == "" {
		t.Fatalf("DenyIP(%q, %v, %q)", d.ip, d.until, d.reason)
	}
	// Banned: even a benign request is denied, other clients are not.
	clock.Advance(5 * time.Minute)
	if v := rw.Check(ctx, benign, ""); v.Allowed || v.Category != CategoryIPDenied || v.Status != 403 {
		t.Fatalf("banned client allowed: %+v", v)
	}
	if v := rw.Check(ctx, benign, "203.0.113.1"); !v.Allowed {
		t.Fatalf("other client denied: %+v", v)
	}
	rw.Check(ctx, attack, "") // no second DenyIP while banned
	if denier.count() != 1 {
		t.Fatalf("DenyIP called again during the ban: %+v", denier.calls)
	}
	// Released after the ban; the count starts over.
	clock.Advance(5*time.Minute + time.Second)
	if v := rw.Check(ctx, benign, ""); !v.Allowed {
		t.Fatalf("client still denied after the ban: %+v", v)
	}
	rw.Check(ctx, attack, "")
	if denier.count() != 1 {
		t.Fatal("one detection after the ban re-banned the client")
	}

	if got := testutil.ToFloat64(metrics.Threats.WithLabelValues("orders", CategorySQLi, "942100")); got != 6 {
		t.Errorf("threats{orders,sqli,942100} = %v, want 6", got)
	}
	if got := testutil.ToFloat64(metrics.Threats.WithLabelValues("orders", CategoryIPDenied, RuleRepeatOffender)); got != 2 {
		t.Errorf("threats{orders,ip-reputation} = %v, want 2", got)
	}
	if _, err := NewMetrics(promReg); err != nil {
		t.Errorf("registering the metrics twice: %v", err)
	}
}

func TestTrackerIgnoresRoutesWithoutPolicy(t *testing.T) {
	clock := &fakeClock{now: time.Unix(0, 0)}
	denier := &recordingDenier{}
	tr := NewTracker(denier, clock.Now, quiet)
	p := OffenderPolicy{Threshold: 1, Window: time.Minute, BanDuration: time.Minute}
	if banned, _, _ := tr.Record(context.Background(), "192.0.2.1", p, "x"); banned {
		t.Fatal("disabled policy banned")
	}
	p.Enabled = true
	if banned, until, _ := tr.Record(context.Background(), "192.0.2.1", p, "x"); !banned || !until.Equal(clock.Now().Add(time.Minute)) {
		t.Fatal("threshold 1 did not ban")
	}
	if _, ok := tr.Banned("192.0.2.1"); !ok {
		t.Fatal("not banned")
	}
	tr.Release("192.0.2.1")
	if _, ok := tr.Banned("192.0.2.1"); ok {
		t.Fatal("still banned after Release")
	}
}
