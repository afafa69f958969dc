package analytics

import (
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFromHTTPLog(t *testing.T) {
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	e := FromHTTPLog(envoyEntry(logSpec{at: at, route: "r1", method: corev3.RequestMethod_PATCH, status: 504,
		total: 2 * time.Second, upstream: 1500 * time.Millisecond, user: "u", apiKey: "k", tenant: "t",
		reqHdr: 1, reqBody: 2, respHdr: 3, respBody: 4, flags: &alsdata.ResponseFlags{UpstreamRequestTimeout: true}}), time.Time{})
	want := Entry{Time: at, Route: "r1", Method: "PATCH", Status: 504, APIKey: "k", User: "u", Tenant: "t",
		BytesIn: 3, BytesOut: 7, Duration: 2 * time.Second, Upstream: 1500 * time.Millisecond, HasUpstream: true, ErrorType: ErrUpstreamTimeout}
	if e != want {
		t.Errorf("got  %+v\nwant %+v", e, want)
	}
	// No response, no route, no identity, no start time.
	raw := &alsdata.HTTPAccessLogEntry{CommonProperties: &alsdata.AccessLogCommon{
		ResponseFlags: &alsdata.ResponseFlags{DownstreamConnectionTermination: true}}}
	now := time.Unix(1700000000, 0)
	e = FromHTTPLog(raw, now)
	if e.Route != UnmatchedRoute || e.Status != 0 || e.Method != "OTHER" || !e.Time.Equal(now) || e.ErrorType != ErrDownstreamReset || e.HasUpstream {
		t.Errorf("bare entry = %+v", e)
	}
	for _, tc := range []struct {
		status uint32
		flags  *alsdata.ResponseFlags
		want   string
	}{
		{200, nil, ""}, {302, nil, ""}, {400, nil, ErrClient}, {401, nil, ErrUnauthorized}, {429, nil, ErrRateLimited},
		{500, nil, ErrServer}, {503, &alsdata.ResponseFlags{UpstreamConnectionFailure: true}, ErrUpstreamConnect},
		{429, &alsdata.ResponseFlags{RateLimited: true}, ErrRateLimited},
		{403, &alsdata.ResponseFlags{UnauthorizedDetails: &alsdata.ResponseFlags_Unauthorized{}}, ErrUnauthorized},
		{503, &alsdata.ResponseFlags{UpstreamRemoteReset: true}, ErrUpstreamReset},
	} {
		if got := errorType(tc.flags, tc.status); got != tc.want {
			t.Errorf("errorType(%v, %d) = %q, want %q", tc.flags, tc.status, got, tc.want)
		}
	}
}

func TestKeyCapFoldsIntoOther(t *testing.T) {
	store, err := OpenBoltStore(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	reg := prometheus.NewRegistry()
	clock := newClock(e2eNow)
	svc, err := New(nil, reg, store, DefaultRetention(), WithClock(clock.now), WithFlushInterval(0), WithMaxKeysPerMinute(20))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	// 100 users on 5 routes: 20 real keys, then per-route Other keys (at most 2), then all-Other.
	for i := range 100 {
		e := Entry{Time: e2eToday, Route: fmt.Sprintf("r%d", i%5), Method: "GET", Status: 200, User: fmt.Sprintf("u%d", i)}
		svc.Record(&e)
	}
	if n := svc.agg.size(); n != 23 {
		t.Errorf("pending rows = %d, want 20 + 2 route overflow + 1 all-other", n)
	}
	if got := testutil.ToFloat64(svc.m.overflow); got != 80 {
		t.Errorf("overflow counter = %v, want 80", got)
	}
	rep, err := svc.Usage(t.Context(), e2eToday, e2eToday.Add(time.Minute), Day, Filter{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Totals.Requests != 100 {
		t.Errorf("total = %d, want 100 (nothing lost)", rep.Totals.Requests)
	}
	var other uint64
	for _, u := range rep.ByUser {
		if u.Name == Other {
			other = u.Requests
		}
	}
	if other != 80 || len(rep.ByUser) != 21 {
		t.Errorf("by_user: other=%d, %d users", other, len(rep.ByUser))
	}
	// A new minute starts a new cap.
	e := Entry{Time: e2eToday.Add(time.Minute), Route: "r0", Method: "GET", Status: 200, User: "fresh"}
	svc.Record(&e)
	if got := testutil.ToFloat64(svc.m.overflow); got != 80 {
		t.Errorf("new minute overflowed: %v", got)
	}
}

func TestActiveUsers(t *testing.T) {
	a := newActiveUsers()
	t0 := time.Date(2024, 1, 1, 12, 0, 30, 0, time.UTC)
	for i := range 7 {
		a.add(fmt.Sprintf("user-%d", i), t0)
		a.add(fmt.Sprintf("user-%d", i), t0) // repeats do not count
	}
	a.add("", t0)
	if got := a.count(t0); got != 7 {
		t.Errorf("count = %v, want 7", got)
	}
	a.add("late", t0.Add(3*time.Minute))
	if got := a.count(t0.Add(3 * time.Minute)); got != 8 {
		t.Errorf("count after 3m = %v, want 8", got)
	}
	if got := a.count(t0.Add(5 * time.Minute)); got != 1 {
		t.Errorf("count after 5m = %v, want 1 (the first minute left the window)", got)
	}
	if got := a.count(t0.Add(10 * time.Minute)); got != 0 {
		t.Errorf("count after 10m = %v", got)
	}
	big := newActiveUsers()
	const n = 50000
	for i := range n {
		big.add(fmt.Sprintf("u-%d", i), t0.Add(time.Duration(i%240)*time.Second))
	}
	if got := big.count(t0.Add(4 * time.Minute)); math.Abs(got-n)/n > 0.05 {
		t.Errorf("estimate %v for %d users is off by more than 5%%", got, n)
	}
}

func TestQuantile(t *testing.T) {
	var s Stats
	for _, ms := range []int{1, 3, 3, 3, 40, 40, 40, 40, 40, 20000} {
		s.add(&Entry{Status: 200, Duration: time.Duration(ms) * time.Millisecond})
	}
	// 10 samples: p50 rank 5 falls in (25,50] holding samples 5..9 -> 25 + 25*1/5 = 30.
	if got := s.quantileMs(0.5); got != 30 {
		t.Errorf("p50 = %v", got)
	}
	if got := s.quantileMs(0.1); got != 1 {
		t.Errorf("p10 = %v", got)
	}
	if got := s.quantileMs(0.99); got != 10000 {
		t.Errorf("p99 = %v (the unbounded bucket reports its lower bound)", got)
	}
}

func TestRetentionValidate(t *testing.T) {
	if err := DefaultRetention().Validate(); err != nil {
		t.Error(err)
	}
	if err := RetentionFor(90 * 24 * time.Hour).Validate(); err != nil {
		t.Error(err)
	}
	if r := RetentionFor(12 * time.Hour); r.Minute != 12*time.Hour || r.Hour != 12*time.Hour || r.Validate() == nil {
		t.Errorf("12h total: %+v must fail (shorter than a day)", r)
	}
	if (Retention{Minute: time.Hour, Hour: time.Minute, Day: 48 * time.Hour}).Validate() == nil {
		t.Error("hour retention shorter than one hour accepted")
	}
}
