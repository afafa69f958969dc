package analytics

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	alsdata "github.com/envoyproxy/go-control-plane/envoy/data/accesslog/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
)

var (
	e2eNow   = time.Date(2024, 1, 15, 10, 30, 20, 0, time.UTC)
	e2eToday = time.Date(2024, 1, 15, 10, 30, 5, 0, time.UTC)
	e2eYday  = time.Date(2024, 1, 14, 23, 59, 30, 0, time.UTC)
)

// e2eBatches are six requests over two messages, as one Envoy would stream them.
func e2eBatches() [][]*alsdata.HTTPAccessLogEntry {
	get, post, del := corev3.RequestMethod_GET, corev3.RequestMethod_POST, corev3.RequestMethod_DELETE
	return [][]*alsdata.HTTPAccessLogEntry{
		{
			envoyEntry(logSpec{at: e2eToday, route: "users", method: get, path: "/users/1", status: 200, total: 3 * time.Millisecond,
				upstream: 1800 * time.Microsecond, user: "u1", apiKey: "k1", tenant: "t1", reqHdr: 100, respHdr: 80, respBody: 500}),
			envoyEntry(logSpec{at: e2eToday, route: "users", method: post, path: "/users", status: 201, total: 40 * time.Millisecond,
				upstream: 35 * time.Millisecond, user: "u2", apiKey: "k1", tenant: "t1", reqHdr: 120, reqBody: 300, respHdr: 80, respBody: 20}),
			envoyEntry(logSpec{at: e2eToday, route: "users", method: get, path: "/users/2", status: 503, total: 1500 * time.Millisecond,
				noUpstream: true, flags: &alsdata.ResponseFlags{NoHealthyUpstream: true}, user: "u1", apiKey: "k1", tenant: "t1",
				reqHdr: 100, respHdr: 60, respBody: 19}),
		},
		{
			envoyEntry(logSpec{at: e2eToday, route: "orders", method: get, path: "/orders", status: 404, total: 7 * time.Millisecond,
				upstream: 5 * time.Millisecond, user: "u1", apiKey: "k2", tenant: "t2", reqHdr: 90, respHdr: 70, respBody: 30}),
			envoyEntry(logSpec{at: e2eToday, route: "", method: get, path: "/nope", status: 404, total: 500 * time.Microsecond,
				noUpstream: true, flags: &alsdata.ResponseFlags{NoRouteFound: true}, reqHdr: 50, respHdr: 40, respBody: 10}),
			envoyEntry(logSpec{at: e2eYday, route: "orders", method: del, path: "/orders/9", status: 204, total: 12 * time.Millisecond,
				upstream: 10 * time.Millisecond, user: "u3", apiKey: "k2", tenant: "t2", reqHdr: 95, respHdr: 60}),
			periodic(envoyEntry(logSpec{at: e2eToday, route: "users", method: get, path: "/users/stream", status: 200,
				total: 30 * time.Second, user: "u9", apiKey: "k1", tenant: "t1", reqHdr: 100, respBody: 1 << 20})),
		},
	}
}

// periodic marks e as an intermediate entry (HCM access_log_flush_interval), which must not
// count as a request.
func periodic(e *alsdata.HTTPAccessLogEntry) *alsdata.HTTPAccessLogEntry {
	e.CommonProperties.IntermediateLogEntry = true
	e.CommonProperties.AccessLogType = alsdata.AccessLogType_DownstreamPeriodic
	return e
}

func get(t *testing.T, h http.Handler, target string) (int, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec.Code, rec.Body.Bytes()
}

func getUsage(t *testing.T, s *Service, query string) *UsageReport {
	t.Helper()
	code, body := get(t, s.UsageHandler(), "/api/v1/management/analytics/usage?"+query)
	if code != http.StatusOK {
		t.Fatalf("usage?%s: %d %s", query, code, body)
	}
	var rep UsageReport
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	return &rep
}

func TestALSEndToEnd(t *testing.T) {
	t.Run("fast codec", func(t *testing.T) { testALSEndToEnd(t, []grpc.ServerOption{ServerOption()}) })
	t.Run("standard codec", func(t *testing.T) { testALSEndToEnd(t, nil) })
}

func testALSEndToEnd(t *testing.T, sopts []grpc.ServerOption) {
	dbPath := filepath.Join(t.TempDir(), "analytics.db")
	store, err := OpenBoltStore(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	clock := newClock(e2eNow)
	srv := startALSServer(t, sopts, store, DefaultRetention(), WithClock(clock.now), WithFlushInterval(0))
	sendLogs(t, srv.addr, e2eBatches()...)

	// /metrics: exact counts and buckets.
	ms := httptest.NewServer(promhttp.HandlerFor(srv.reg, promhttp.HandlerOpts{}))
	defer ms.Close()
	resp, err := http.Get(ms.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		`api_gateway_requests_total{method="GET",route="users",status_class="2xx"} 1`,
		`api_gateway_requests_total{method="POST",route="users",status_class="2xx"} 1`,
		`api_gateway_requests_total{method="GET",route="users",status_class="5xx"} 1`,
		`api_gateway_requests_total{method="GET",route="orders",status_class="4xx"} 1`,
		`api_gateway_requests_total{method="GET",route="unmatched",status_class="4xx"} 1`,
		`api_gateway_requests_total{method="DELETE",route="orders",status_class="2xx"} 1`,
		`api_gateway_request_duration_seconds_bucket{method="GET",route="users",status_class="2xx",le="0.002"} 0`,
		`api_gateway_request_duration_seconds_bucket{method="GET",route="users",status_class="2xx",le="0.005"} 1`,
		`api_gateway_request_duration_seconds_bucket{method="GET",route="users",status_class="5xx",le="1"} 0`,
		`api_gateway_request_duration_seconds_bucket{method="GET",route="users",status_class="5xx",le="2.5"} 1`,
		`api_gateway_request_duration_seconds_sum{method="GET",route="users",status_class="5xx"} 1.5`,
		`api_gateway_request_size_bytes_sum{method="POST",route="users"} 420`,
		`api_gateway_request_size_bytes_bucket{method="POST",route="users",le="256"} 0`,
		`api_gateway_request_size_bytes_bucket{method="POST",route="users",le="1024"} 1`,
		`api_gateway_response_size_bytes_sum{method="GET",route="users",status_class="2xx"} 580`,
		`api_gateway_errors_total{route="users",status_class="5xx",type="no_healthy_upstream"} 1`,
		`api_gateway_errors_total{route="orders",status_class="4xx",type="client_error"} 1`,
		`api_gateway_errors_total{route="unmatched",status_class="4xx",type="no_route"} 1`,
		`api_gateway_upstream_latency_seconds_count{route="users"} 2`,
		`api_gateway_upstream_latency_seconds_bucket{route="users",le="0.001"} 0`,
		`api_gateway_upstream_latency_seconds_bucket{route="users",le="0.002"} 1`,
		`api_gateway_upstream_latency_seconds_bucket{route="users",le="0.025"} 1`,
		`api_gateway_upstream_latency_seconds_bucket{route="users",le="0.05"} 2`,
		`api_gateway_upstream_latency_seconds_count{route="orders"} 2`,
		// u1 and u2 today; u3 was active yesterday, outside the 5-minute window.
		`api_gateway_active_users 2`,
		`api_gateway_als_entries_total{type="http"} 6`,
		`api_gateway_als_entries_total{type="http_intermediate"} 1`,
	} {
		if !bytes.Contains(text, []byte("\n"+line+"\n")) {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	if bytes.Contains(text, []byte(`type="server_error"`)) || bytes.Contains(text, []byte("u1")) {
		t.Errorf("unexpected series in /metrics:\n%s", text)
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(text, "api_gateway_"))
	}

	// Usage from memory (nothing flushed yet).
	checkUsage := func(s *Service) []byte {
		rep := getUsage(t, s, "start=2024-01-14&end=2024-01-15")
		tot := rep.Totals
		if tot.Requests != 6 || tot.Errors != 3 || tot.Status["2xx"] != 3 || tot.Status["4xx"] != 2 || tot.Status["5xx"] != 1 {
			t.Errorf("totals = %+v", tot)
		}
		if tot.BytesIn != 855 || tot.BytesOut != 969 {
			t.Errorf("bytes in/out = %d/%d, want 855/969", tot.BytesIn, tot.BytesOut)

		}
		wantCum := []uint64{1, 1, 2, 3, 4, 5, 5, 5, 5, 5, 6, 6, 6, 6}
		if len(tot.Latency.Buckets) != len(wantCum) {
			t.Fatalf("latency buckets = %+v", tot.Latency.Buckets)
		}
		for i, b := range tot.Latency.Buckets {
			if b.Count != wantCum[i] {
				t.Errorf("latency bucket le=%s = %d, want %d", b.LE, b.Count, wantCum[i])
			}
		}
		if len(rep.Series) != 2 || rep.Series[0].Start != time.Date(2024, 1, 14, 0, 0, 0, 0, time.UTC) ||
			rep.Series[0].Requests != 1 || rep.Series[1].Requests != 5 {
			t.Errorf("series = %+v", rep.Series)
		}
		if len(rep.ByRoute) != 3 || rep.ByRoute[0].Name != "users" || rep.ByRoute[0].Requests != 3 ||
			rep.ByRoute[1].Name != "orders" || rep.ByRoute[1].Requests != 2 || rep.ByRoute[2].Name != "unmatched" {
			t.Errorf("by_route = %+v", rep.ByRoute)
		}
		if rep.ByRoute[0].UpstreamLatencyAvgMs != 18.4 { // (1.8 + 35) / 2
			t.Errorf("users upstream avg = %v", rep.ByRoute[0].UpstreamLatencyAvgMs)
		}
		if r := getUsage(t, s, "start=2024-01-01&end=2024-01-31&tenant=t1"); r.Totals.Requests != 3 || len(r.ByAPIKey) != 1 || r.ByAPIKey[0].Name != "k1" {
			t.Errorf("tenant=t1: %+v / %+v", r.Totals, r.ByAPIKey)
		}
		if r := getUsage(t, s, "start=2024-01-01&end=2024-01-31&api_key=k2&route=orders"); r.Totals.Requests != 2 || r.Totals.Errors != 1 {
			t.Errorf("api_key=k2: %+v", r.Totals)
		}
		r := getUsage(t, s, "start=2024-01-15T10:00:00Z&end=2024-01-15T11:00:00Z&group_by=hour")
		if r.Totals.Requests != 5 || len(r.Series) != 1 || r.Series[0].Start != time.Date(2024, 1, 15, 10, 0, 0, 0, time.UTC) {
			t.Errorf("group_by=hour: %+v %+v", r.Totals, r.Series)
		}
		code, body := get(t, s.ErrorsHandler(), "/api/v1/management/analytics/errors?timeframe=24h")
		if code != 200 {
			t.Fatalf("errors: %d %s", code, body)
		}
		var er ErrorReport
		if err := json.Unmarshal(body, &er); err != nil {
			t.Fatal(err)
		}
		if er.Requests != 6 || er.Errors != 3 || er.Resolution != "hour" || er.ByClass["4xx"] != 2 || er.ByClass["5xx"] != 1 ||
			len(er.ByStatus) != 2 || er.ByStatus[0] != (StatusCount{404, 2}) || er.ByStatus[1] != (StatusCount{503, 1}) {
			t.Errorf("errors report = %s", body)
		}
		if len(er.ByRoute) != 3 || er.ByRoute[0].Route != "orders" || er.ByRoute[0].ByStatus[0] != (StatusCount{404, 1}) ||
			er.ByRoute[2].Route != "users" || er.ByRoute[2].Requests != 3 || er.ByRoute[2].ErrorRate != 0.3333 {
			t.Errorf("errors by route = %+v", er.ByRoute)
		}
		_, body1h := get(t, s.ErrorsHandler(), "/x?timeframe=1h")
		var er1 ErrorReport
		_ = json.Unmarshal(body1h, &er1)
		if er1.Requests != 5 || er1.Errors != 3 || er1.Resolution != "minute" {
			t.Errorf("timeframe=1h: %s", body1h)
		}
		_, full := get(t, s.UsageHandler(), "/x?start=2024-01-14&end=2024-01-15")
		return full
	}
	before := checkUsage(srv.svc)

	// Flush, close, reopen the file in a new service: the same answers from disk.
	if err := srv.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store2, err := OpenBoltStore(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store2.Close()
	srv2 := startALSServer(t, sopts, store2, DefaultRetention(), WithClock(clock.now), WithFlushInterval(0))
	if srv2.svc.agg.size() != 0 {
		t.Fatal("new service has pending rows")
	}
	after := checkUsage(srv2.svc)
	if !bytes.Equal(before, after) {
		t.Errorf("usage differs after restart:\nbefore %s\nafter  %s", before, after)
	}
}

func TestAnalyticsBadRequests(t *testing.T) {
	store, err := OpenBoltStore(filepath.Join(t.TempDir(), "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	svc, err := New(nil, nil, store, DefaultRetention(), WithFlushInterval(0), WithClock(newClock(e2eNow).now))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for _, tc := range []struct {
		h            http.Handler
		query, field string
	}{
		{svc.UsageHandler(), "start=2024-13-01&end=2024-01-31", "start"},
		{svc.UsageHandler(), "start=2024-01-01&end=yesterday", "end"},
		{svc.UsageHandler(), "start=2024-02-01&end=2024-01-01", "start"},
		{svc.UsageHandler(), "start=2024-01-01T10:00:00Z&end=2024-01-01T10:00:00Z", "start"},
		{svc.UsageHandler(), "start=2020-01-01&end=2024-01-01&group_by=hour", "end"},
		{svc.UsageHandler(), "group_by=week", "group_by"},
		{svc.UsageHandler(), "limit=0", "limit"},
		{svc.ErrorsHandler(), "timeframe=abc", "timeframe"},
		{svc.ErrorsHandler(), "timeframe=-5m", "timeframe"},
		{svc.ErrorsHandler(), "timeframe=9999d", "timeframe"},
	} {
		code, body := get(t, tc.h, "/x?"+tc.query)
		var eb errorBody
		if err := json.Unmarshal(body, &eb); err != nil {
			t.Fatalf("%s: %v (%s)", tc.query, err, body)
		}
		if code != 400 || eb.Error.Code != "invalid_argument" || eb.Error.Message == "" || len(eb.Error.Details) == 0 ||
			eb.Error.Details[0].Field != tc.field || eb.Error.Details[0].Problem == "" {
			t.Errorf("%s: %d %s", tc.query, code, body)
		}
	}
	rec := httptest.NewRecorder()
	svc.UsageHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/x", nil))
	if rec.Code != http.StatusMethodNotAllowed || !strings.Contains(rec.Body.String(), `"method_not_allowed"`) {
		t.Errorf("POST: %d %s", rec.Code, rec.Body)
	}
	// A range with nothing in it is 200 with zeros; dates default to the last 7 days.
	for _, q := range []string{"start=2023-01-01&end=2023-01-02", "", "group_by=hour"} {
		if code, body := get(t, svc.UsageHandler(), "/x?"+q); code != 200 || !strings.Contains(string(body), `"requests":0`) {
			t.Errorf("%q: %d %s", q, code, body)
		}
	}
	if code, body := get(t, svc.ErrorsHandler(), "/x?timeframe=7d"); code != 200 || !strings.Contains(string(body), `"resolution":"hour"`) {
		t.Errorf("timeframe=7d: %d %s", code, body)
	}
}

func grepLines(b []byte, sub string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
