package analytics

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	testutil2 "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// storeFactory opens a fresh, empty store of one kind.
type storeFactory func(t *testing.T, ret Retention) Store

func stores() map[string]storeFactory {
	return map[string]storeFactory{
		"bolt": func(t *testing.T, _ Retention) Store {
			s, err := OpenBoltStore(filepath.Join(t.TempDir(), "analytics.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		},
		"redis": func(t *testing.T, ret Retention) Store {
			r := testutil.StartRedis(t)
			c := redis.NewClient(&redis.Options{Addr: r.Addr})
			t.Cleanup(func() { c.Close() })
			return NewRedisStore(c, "test", ret)
		},
	}
}

func scanAll(t *testing.T, s Store, res Resolution, from, to time.Time) map[Key]Stats {
	t.Helper()
	out := map[Key]Stats{}
	err := s.Scan(context.Background(), res, from, to, func(r Row) error {
		if r.Res != res || r.Start.Before(from) || !r.Start.Before(to) {
			t.Errorf("row %+v outside %s [%s, %s)", r, res, from, to)
		}
		st := out[r.Key]
		st.Merge(&r.Stats)
		out[r.Key] = st
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStores(t *testing.T) {
	base := time.Date(2024, 3, 1, 10, 1, 0, 0, time.UTC)
	a := Key{Route: "r1", APIKey: "k1", User: "u1", Tenant: "t1"}
	b := Key{Route: "r2"}
	st := func(n uint64, code uint16) Stats {
		s := Stats{Requests: n, BytesIn: 10 * n, LatencySumUs: 1000 * n}
		s.Status[1] = n
		s.Latency[3] = n
		if code != 0 {
			s.Codes = map[uint16]uint64{code: n}
			s.Status[code/100-1] += n
		}
		return s
	}
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			s := open(t, DefaultRetention())
			ctx := context.Background()
			rows := []Row{
				{Res: Minute, Start: base, Key: a, Stats: st(1, 503)},
				{Res: Minute, Start: base.Add(time.Minute), Key: a, Stats: st(2, 0)},
				{Res: Minute, Start: base.Add(time.Minute), Key: b, Stats: st(3, 404)},
				{Res: Hour, Start: Hour.Truncate(base), Key: a, Stats: st(7, 0)},
			}
			if err := s.Merge(ctx, rows); err != nil {
				t.Fatal(err)
			}
			// A second writer adds; it never overwrites.
			if err := s.Merge(ctx, rows[:1]); err != nil {
				t.Fatal(err)
			}
			got := scanAll(t, s, Minute, base, base.Add(time.Minute))
			if len(got) != 1 || got[a].Requests != 2 || got[a].Codes[503] != 2 || got[a].Status[4] != 2 || got[a].Latency[3] != 2 || got[a].BytesIn != 20 {
				t.Errorf("first minute = %+v", got)
			}
			got = scanAll(t, s, Minute, base.Add(-time.Hour), base.Add(time.Hour))
			if len(got) != 2 || got[a].Requests != 4 || got[b].Requests != 3 || got[b].Codes[404] != 3 {
				t.Errorf("all minutes = %+v", got)
			}
			if h := scanAll(t, s, Hour, base.Add(-time.Hour), base.Add(time.Hour)); len(h) != 1 || h[a].Requests != 7 {
				t.Errorf("hours = %+v", h)
			}
			if d := scanAll(t, s, Day, base.Add(-48*time.Hour), base.Add(48*time.Hour)); len(d) != 0 {
				t.Errorf("days = %+v", d)
			}
			if err := s.Expire(ctx, Minute, base.Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			got = scanAll(t, s, Minute, base.Add(-time.Hour), base.Add(time.Hour))
			if len(got) != 2 || got[a].Requests != 2 || got[b].Requests != 3 {
				t.Errorf("after expire = %+v", got)
			}
			if h := scanAll(t, s, Hour, base.Add(-time.Hour), base.Add(time.Hour)); h[a].Requests != 7 {
				t.Errorf("expiring minutes touched hours: %+v", h)
			}
		})
	}
}

// TestRollupAndRetention flushes minutes into minute, hour and day rows and expires each
// resolution on its own retention, for both stores.
func TestRollupAndRetention(t *testing.T) {
	ret := Retention{Minute: 2 * time.Hour, Hour: 48 * time.Hour, Day: 10 * 24 * time.Hour}
	d0 := time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			store := open(t, ret)
			clock := newClock(d0)
			svc, err := New(nil, nil, store, ret, WithClock(clock.now), WithFlushInterval(0))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			ctx := context.Background()
			rec := func(at time.Time, ms int) {
				e := Entry{Time: at, Route: "r", Method: "GET", Status: 200, Duration: time.Duration(ms) * time.Millisecond, User: "u"}
				svc.Record(&e)
			}
			rec(d0.Add(10*time.Second), 3)
			rec(d0.Add(59*time.Minute), 30)
			if err := svc.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			clock.add(65 * time.Minute)
			rec(d0.Add(65*time.Minute), 300)
			if err := svc.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			k := Key{Route: "r", User: "u"}
			wide := func(res Resolution) map[Key]Stats {
				return scanAll(t, store, res, d0.Add(-30*24*time.Hour), d0.Add(30*24*time.Hour))
			}
			count := func(res Resolution) int {
				n := 0
				_ = store.Scan(ctx, res, d0.Add(-30*24*time.Hour), d0.Add(30*24*time.Hour), func(Row) error { n++; return nil })
				return n
			}
			if count(Minute) != 3 || count(Hour) != 2 || count(Day) != 1 {
				t.Fatalf("rows minute/hour/day = %d/%d/%d, want 3/2/1", count(Minute), count(Hour), count(Day))
			}
			if d := wide(Day)[k]; d.Requests != 3 || d.Latency[latencyBucket(3*time.Millisecond)] != 1 || d.LatencySumUs != 333000 {
				t.Errorf("day row = %+v", d)
			}
			if h := scanAll(t, store, Hour, d0, d0.Add(time.Hour)); h[k].Requests != 2 {
				t.Errorf("first hour = %+v", h)
			}
			// 3h later minutes are past their 2h retention; hours and days stay.
			clock.add(3 * time.Hour)
			if err := svc.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if count(Minute) != 0 || count(Hour) != 2 || count(Day) != 1 {
				t.Errorf("after 3h: %d/%d/%d, want 0/2/1", count(Minute), count(Hour), count(Day))
			}
			rep, err := svc.Usage(ctx, d0.Add(-24*time.Hour), d0.Add(24*time.Hour), Hour, Filter{}, 10)
			if err != nil || rep.Totals.Requests != 3 || len(rep.Series) != 2 {
				t.Errorf("hour usage after minute expiry: %+v %v", rep, err)
			}
			clock.add(3 * 24 * time.Hour)
			if err := svc.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if count(Hour) != 0 || count(Day) != 1 {
				t.Errorf("after 3d: hours %d days %d, want 0/1", count(Hour), count(Day))
			}
			if r, _ := svc.Usage(ctx, d0.Add(-24*time.Hour), d0.Add(24*time.Hour), Day, Filter{}, 10); r.Totals.Requests != 3 {
				t.Errorf("day usage = %+v", r.Totals)
			}
			clock.add(11 * 24 * time.Hour)
			if err := svc.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if count(Day) != 0 {
				t.Errorf("after 14d: %d day rows", count(Day))
			}
		})
	}
}

// TestRedisReplicasAndOutage: two gateway replicas add into the same Redis buckets; a Redis
// outage does not block the ALS stream and the pending rows are written once it is back.
func TestRedisReplicasAndOutage(t *testing.T) {
	r := testutil.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 500 * time.Millisecond})
	defer c.Close()
	clock := newClock(e2eNow)
	ret := DefaultRetention()
	a := startALS(t, NewRedisStore(c, "gw", ret), ret, WithClock(clock.now), WithFlushInterval(0))
	b := startALS(t, NewRedisStore(c, "gw", ret), ret, WithClock(clock.now), WithFlushInterval(0))
	spec := logSpec{at: e2eToday, route: "users", method: corev3.RequestMethod_GET, path: "/u", status: 200,
		total: 4 * time.Millisecond, upstream: time.Millisecond, user: "u1", apiKey: "k1", tenant: "t1", reqHdr: 10, respHdr: 20}
	sendLogs(t, a.addr, []*alsdata.HTTPAccessLogEntry{envoyEntry(spec), envoyEntry(spec)})
	sendLogs(t, b.addr, []*alsdata.HTTPAccessLogEntry{envoyEntry(spec)})
	ctx := context.Background()
	for _, s := range []*Service{a.svc, b.svc} {
		if err := s.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*Service{a.svc, b.svc} {
		if rep := getUsage(t, s, "start=2024-01-15&end=2024-01-15"); rep.Totals.Requests != 3 || rep.Totals.BytesOut != 60 {
			t.Errorf("replica sees %+v, want 3 requests", rep.Totals)
		}
	}

	r.Stop()
	sendLogs(t, a.addr, []*alsdata.HTTPAccessLogEntry{envoyEntry(spec), envoyEntry(spec)}) // not blocked by Redis
	if err := a.svc.Flush(ctx); err == nil {
		t.Fatal("flush with Redis down succeeded")
	}
	if code, body := get(t, a.svc.UsageHandler(), "/x?start=2024-01-15&end=2024-01-15"); code != 500 {
		t.Errorf("usage with Redis down: %d %s", code, body)
	}
	r.Restart()
	if err := a.svc.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.svc.Flush(ctx); err != nil { // nothing left: no double counting
		t.Fatal(err)
	}
	// Redis restarted without persistence: exactly the retried batch is there, once.
	if rep := getUsage(t, b.svc, "start=2024-01-15&end=2024-01-15"); rep.Totals.Requests != 2 {
		t.Errorf("after outage: %+v, want the 2 retried requests", rep.Totals)
	}
}

// TestPendingBoundedWhileStoreFails: with the store down, memory keeps at most
// pendingMinutes minutes of rows; the oldest minutes are dropped and counted.
func TestPendingBoundedWhileStoreFails(t *testing.T) {
	r := testutil.StartRedis(t)
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	ret := DefaultRetention()
	clock := newClock(e2eNow)
	svc, err := New(nil, nil, NewRedisStore(c, "gw", ret), ret, WithClock(clock.now), WithFlushInterval(0), WithMaxKeysPerMinute(2))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	r.Stop()
	base := time.Date(2024, 1, 15, 9, 0, 0, 0, time.UTC)
	for m := range 40 {
		for _, u := range []string{"a", "b"} {
			e := Entry{Time: base.Add(time.Duration(m) * time.Minute), Route: "r", Method: "GET", Status: 200, User: u}
			svc.Record(&e)
		}
	}
	if err := svc.Flush(t.Context()); err == nil {
		t.Fatal("flush succeeded with Redis down")
	}
	if n := svc.agg.size(); n != 2*pendingMinutes {
		t.Errorf("pending rows = %d, want %d", n, 2*pendingMinutes)
	}
	if got := testutil2.ToFloat64(svc.m.dropped); got != 20 {
		t.Errorf("dropped = %v, want the 20 requests of the 10 oldest minutes", got)
	}
	r.Restart()
	if err := svc.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	rep, err := svc.Usage(t.Context(), base, base.Add(time.Hour), Hour, Filter{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Totals.Requests != 60 || len(rep.Series) != 1 {
		t.Errorf("stored %d requests, want the newest 60", rep.Totals.Requests)
	}
}
