package analytics

import (
	"context"
	"sort"
	"strconv"
	"time"
)

// Filter selects rows; empty fields match everything.
type Filter struct {
	Route  string `json:"route,omitempty"`
	APIKey string `json:"api_key,omitempty"`
	User   string `json:"user,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

func (f Filter) match(k Key) bool {
	return (f.Route == "" || f.Route == k.Route) && (f.APIKey == "" || f.APIKey == k.APIKey) &&
		(f.User == "" || f.User == k.User) && (f.Tenant == "" || f.Tenant == k.Tenant)
}

// collect calls fn for every row of resolution res in [from, to) (both aligned to res) that
// matches f: stored rows plus the in-memory rows not yet flushed, rolled up to res.
func (s *Service) collect(ctx context.Context, res Resolution, from, to time.Time, f Filter, fn func(start time.Time, k Key, st *Stats)) error {
	// Holding flushMu keeps a batch from being both in the store and in memory while we read.
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	err := s.store.Scan(ctx, res, from, to, func(r Row) error {
		if f.match(r.Key) {
			fn(r.Start, r.Key, &r.Stats)
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.agg.snapshot(from, to, func(start time.Time, k Key, st *Stats) {
		if f.match(k) {
			fn(res.Truncate(start), k, st)
		}
	})
	return nil
}

// Summary is the JSON form of aggregated Stats.
type Summary struct {
	Requests  uint64            `json:"requests"`
	Errors    uint64            `json:"errors"`
	ErrorRate float64           `json:"error_rate"`
	Status    map[string]uint64 `json:"status"`
	BytesIn   uint64            `json:"bytes_in"`
	BytesOut  uint64            `json:"bytes_out"`
	Latency   LatencySummary    `json:"latency_ms"`
	// UpstreamLatencyAvgMs averages over the requests that reached an upstream.
	UpstreamLatencyAvgMs float64 `json:"upstream_latency_avg_ms"`
}

// LatencySummary is the latency distribution in milliseconds; Buckets (cumulative, as in
// Prometheus) is filled for totals only.
type LatencySummary struct {
	Avg     float64         `json:"avg"`
	P50     float64         `json:"p50"`
	P95     float64         `json:"p95"`
	P99     float64         `json:"p99"`
	Buckets []LatencyBucket `json:"buckets,omitempty"`
}

// LatencyBucket counts requests that took at most LE milliseconds ("+Inf" for all).
type LatencyBucket struct {
	LE    string `json:"le"`
	Count uint64 `json:"count"`
}

func summarize(st *Stats, withBuckets bool) Summary {
	sm := Summary{
		Requests: st.Requests, Errors: st.Errors(), BytesIn: st.BytesIn, BytesOut: st.BytesOut,
		Status: map[string]uint64{"1xx": st.Status[0], "2xx": st.Status[1], "3xx": st.Status[2], "4xx": st.Status[3], "5xx": st.Status[4]},
	}
	if st.Requests > 0 {
		sm.ErrorRate = round4(float64(sm.Errors) / float64(st.Requests))
		sm.Latency = LatencySummary{
			Avg: round3(float64(st.LatencySumUs) / 1000 / float64(st.Requests)),
			P50: round3(st.quantileMs(0.50)), P95: round3(st.quantileMs(0.95)), P99: round3(st.quantileMs(0.99)),
		}
	}
	if st.UpstreamCount > 0 {
		sm.UpstreamLatencyAvgMs = round3(float64(st.UpstreamSumUs) / 1000 / float64(st.UpstreamCount))
	}
	if withBuckets {
		var cum uint64
		for i, n := range st.Latency {
			cum += n
			le := "+Inf"
			if i < len(LatencyBoundsMs) {
				le = strconv.FormatFloat(LatencyBoundsMs[i], 'f', -1, 64)
			}
			sm.Latency.Buckets = append(sm.Latency.Buckets, LatencyBucket{LE: le, Count: cum})
		}
	}
	return sm
}

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }
func round4(f float64) float64 { return float64(int64(f*10000+0.5)) / 10000 }

// UsageReport answers GET .../analytics/usage.
type UsageReport struct {
	Start    time.Time     `json:"start"`
	End      time.Time     `json:"end"`
	GroupBy  string        `json:"group_by"`
	Filter   Filter        `json:"filter"`
	Totals   Summary       `json:"totals"`
	Series   []SeriesPoint `json:"series"`
	ByRoute  []DimSummary  `json:"by_route"`
	ByAPIKey []DimSummary  `json:"by_api_key"`
	ByUser   []DimSummary  `json:"by_user"`
	ByTenant []DimSummary  `json:"by_tenant"`
}

// SeriesPoint is one time bucket.
type SeriesPoint struct {
	Start time.Time `json:"start"`
	Summary
}

// DimSummary is the usage of one value of a dimension ("" = requests without one).
type DimSummary struct {
	Name string `json:"name"`
	Summary
}

// Usage aggregates [from, to) (aligned outward to res) at resolution res. Breakdowns list at
// most limit values each, busiest first.
func (s *Service) Usage(ctx context.Context, from, to time.Time, res Resolution, f Filter, limit int) (*UsageReport, error) {
	from, to = align(from, to, res)
	var total Stats
	series := map[int64]*Stats{}
	dims := [4]map[string]*Stats{{}, {}, {}, {}}
	err := s.collect(ctx, res, from, to, f, func(start time.Time, k Key, st *Stats) {
		total.Merge(st)
		p := series[start.Unix()]
		if p == nil {
			p = &Stats{}
			series[start.Unix()] = p
		}
		p.Merge(st)
		for i, v := range [4]string{k.Route, k.APIKey, k.User, k.Tenant} {
			d := dims[i][v]
			if d == nil {
				d = &Stats{}
				dims[i][v] = d
			}
			d.Merge(st)
		}
	})
	if err != nil {
		return nil, err
	}
	rep := &UsageReport{Start: from, End: to, GroupBy: res.String(), Filter: f, Totals: summarize(&total, true), Series: []SeriesPoint{}}
	starts := make([]int64, 0, len(series))
	for t := range series {
		starts = append(starts, t)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, t := range starts {
		rep.Series = append(rep.Series, SeriesPoint{Start: time.Unix(t, 0).UTC(), Summary: summarize(series[t], false)})
	}
	rep.ByRoute, rep.ByAPIKey, rep.ByUser, rep.ByTenant = top(dims[0], limit), top(dims[1], limit), top(dims[2], limit), top(dims[3], limit)
	return rep, nil
}

func top(m map[string]*Stats, limit int) []DimSummary {
	out := make([]DimSummary, 0, len(m))
	for n, st := range m {
		out = append(out, DimSummary{Name: n, Summary: summarize(st, false)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Requests != out[j].Requests {
			return out[i].Requests > out[j].Requests
		}
		return out[i].Name < out[j].Name
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

func align(from, to time.Time, res Resolution) (time.Time, time.Time) {
	f := res.Truncate(from)
	t := res.Truncate(to)
	if t.Before(to) {
		t = t.Add(res.Duration())
	}
	return f, t
}

// ErrorReport answers GET .../analytics/errors.
type ErrorReport struct {
	Timeframe  string            `json:"timeframe"`
	Start      time.Time         `json:"start"`
	End        time.Time         `json:"end"`
	Resolution string            `json:"resolution"`
	Requests   uint64            `json:"requests"`
	Errors     uint64            `json:"errors"`
	ErrorRate  float64           `json:"error_rate"`
	ByClass    map[string]uint64 `json:"by_class"`
	ByStatus   []StatusCount     `json:"by_status"`
	ByRoute    []RouteErrors     `json:"by_route"`
}

// StatusCount counts one response code.
type StatusCount struct {
	Status int    `json:"status"`
	Count  uint64 `json:"count"`
}

// RouteErrors is the error picture of one route.
type RouteErrors struct {
	Route     string        `json:"route"`
	Requests  uint64        `json:"requests"`
	Errors    uint64        `json:"errors"`
	ErrorRate float64       `json:"error_rate"`
	ByStatus  []StatusCount `json:"by_status"`
}

// maxErrorBuckets bounds the buckets one errors report reads; longer timeframes use a
// coarser resolution.
const maxErrorBuckets = 360

// Errors reports the errors of the last timeframe, at the finest resolution whose retention
// covers it in at most maxErrorBuckets buckets (1h: minutes, 24h or 7d: hours, 30d: days).
// The range is aligned outward to that resolution.
func (s *Service) Errors(ctx context.Context, timeframe time.Duration, f Filter) (*ErrorReport, error) {
	res := Day
	for _, r := range Resolutions {
		if s.retention.For(r) >= timeframe && timeframe/r.Duration() <= maxErrorBuckets {
			res = r
			break
		}
	}
	now := s.now()
	from, to := align(now.Add(-timeframe), now, res)
	var total Stats
	routes := map[string]*Stats{}
	err := s.collect(ctx, res, from, to, f, func(_ time.Time, k Key, st *Stats) {
		total.Merge(st)
		r := routes[k.Route]
		if r == nil {
			r = &Stats{}
			routes[k.Route] = r
		}
		r.Merge(st)
	})
	if err != nil {
		return nil, err
	}
	rep := &ErrorReport{
		Timeframe: timeframe.String(), Start: from, End: to, Resolution: res.String(),
		Requests: total.Requests, Errors: total.Errors(),
		ByClass:  map[string]uint64{"4xx": total.Status[3], "5xx": total.Status[4]},
		ByStatus: codes(&total), ByRoute: []RouteErrors{},
	}
	if total.Requests > 0 {
		rep.ErrorRate = round4(float64(rep.Errors) / float64(total.Requests))
	}
	for name, st := range routes {
		if st.Errors() == 0 {
			continue
		}
		rep.ByRoute = append(rep.ByRoute, RouteErrors{Route: name, Requests: st.Requests, Errors: st.Errors(),
			ErrorRate: round4(float64(st.Errors()) / float64(st.Requests)), ByStatus: codes(st)})
	}
	sort.Slice(rep.ByRoute, func(i, j int) bool {
		if rep.ByRoute[i].Errors != rep.ByRoute[j].Errors {
			return rep.ByRoute[i].Errors > rep.ByRoute[j].Errors
		}
		return rep.ByRoute[i].Route < rep.ByRoute[j].Route
	})
	return rep, nil
}

func codes(st *Stats) []StatusCount {
	out := make([]StatusCount, 0, len(st.Codes))
	for c, n := range st.Codes {
		out = append(out, StatusCount{Status: int(c), Count: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Status < out[j].Status })
	return out
}
