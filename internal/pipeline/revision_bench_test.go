package pipeline_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/ratelimit"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/xds/server"
)

var rulesSink atomic.Pointer[ratelimit.Rules]

var benchT0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// revisionModel has n routes over 1,000 services (two instances each), every object with a
// store revision: every route its own path on one of 100 hosts, a timeout and retries; half
// of them require a JWT, every tenth has its own rate limit; one global rate limit and one
// global CEL policy apply to all.
func revisionModel(n int) *model.Snapshot {
	rev := uint64(0)
	next := func() uint64 { rev++; return rev }
	snap := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID, Meta: model.Meta{Revision: next()},
		RateLimit: &model.GlobalRateLimit{Policies: []string{"global"}}}}
	snap.RateLimits = []*model.RateLimit{
		{ID: "global", RequestsPerUnit: 1000, TimeUnit: model.Duration(time.Second), By: "ip", Meta: model.Meta{Revision: next()}},
		{ID: "per-route", RequestsPerUnit: 10, TimeUnit: model.Duration(time.Second), By: "ip", Meta: model.Meta{Revision: next()}},
	}
	snap.Policies = []*model.Policy{{ID: "no-trace", Rules: []model.PolicyRule{
		{Expression: `request.method == "TRACE"`, Action: "deny"}}, Meta: model.Meta{Revision: next()}}}
	for i := range 1000 {
		for j := range 2 {
			snap.Services = append(snap.Services, &model.Service{ID: fmt.Sprintf("svc-%04d-%d", i, j), Name: fmt.Sprintf("svc-%04d", i),
				Host: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), Port: 8080, Meta: model.Meta{Revision: next()}})
		}
	}
	no := false
	for i := range n {
		r := &model.Route{
			ID:          fmt.Sprintf("route-%05d", i),
			Hosts:       []string{fmt.Sprintf("h%d.example.com", i%100)},
			Conditions:  []model.Condition{{PathPattern: fmt.Sprintf("/api/v1/r%d/*", i), Method: "GET"}},
			Targets:     []model.Target{{Service: fmt.Sprintf("svc-%04d", i%1000)}},
			Timeout:     model.Duration(30e9),
			Retries:     2,
			LoadBalance: "least_connections",
			Meta:        model.Meta{Revision: next()},
		}
		if i%2 == 1 {
			r.RequireAuth = &no
		} else {
			r.Auth = &model.RouteAuth{Methods: []string{"jwt"}, Scopes: []string{"read"}}
		}
		if i%10 == 0 {
			r.RateLimit = &model.RouteRateLimit{Policies: []string{"per-route"}}
		}
		snap.Routes = append(snap.Routes, r)
	}
	snap.Revision = next()
	return snap
}

// newRevisionPipeline is the serve wiring of the three consumers (cmd/api-gateway wire_*.go)
// without a store: xds, ext_authz and the rate-limit rules, fed one IR per revision.
func newRevisionPipeline(b *testing.B) (*pipeline.Pipeline, *extauthz.Engine) {
	log := slog.New(slog.DiscardHandler)
	to := translate.Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return benchT0 }}
	xs, err := server.New(server.Options{Translate: to, Logger: log, Registerer: prometheus.NewRegistry(), Now: to.Now})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { xs.Close() })
	eng, err := extauthz.New(extauthz.Options{Logger: log, Registerer: prometheus.NewRegistry(), Clock: to.Now})
	if err != nil {
		b.Fatal(err)
	}
	var rules atomic.Pointer[ratelimit.Rules] // the service's SetRules is one atomic swap
	rl := pipeline.RevisionFunc{N: "ratelimit", F: func(_ context.Context, rev *pipeline.Revision) (func(), error) {
		r, _ := ratelimit.BuildRulesFromIR(rev.IR)
		return func() { rules.Store(r) }, nil
	}}
	p := pipeline.New(nil, log, xs, eng, rl)
	p.SetTranslate(to)
	return p, eng
}

// cpuTime is the process's user+system CPU time: what a loaded machine does not inflate
// (wall time does; other processes share its cores).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRevision is the pipeline applying one revision to all three consumers (xds,
// ext_authz, rate limit) from one translation:
//
//   - full: a first revision (every route translated, every resource built), for 2.5k, 5k
//     and 10k routes over 1k services (x_2500: time relative to 2.5k routes, linear is 2 and 4);
//     xds-alone is the xds server translating and building by itself, as it did when it was
//     the only reader of the IR (x_xds_alone: full relative to it); three-readings is every
//     consumer reading the model on its own, the shape before one IR (x_three_readings).
//   - ban: the next revision adds one WAF ban (a global deny ip-rule) to 10k routes;
//     heartbeat: the next revision changes one service instance. Both report the route
//     translations they cost (translations/op, must be 0), the CEL policies they compile
//     (compiles/op) and their time relative to a full revision of 10k routes (x_full).
func BenchmarkRevision(b *testing.B) {
	ctx := context.Background()
	full := map[int]float64{}
	for _, n := range []int{2500, 5000, 10000} {
		snap := revisionModel(n)
		b.Run(fmt.Sprintf("xds-alone/routes=%d", n), func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				xs, err := server.New(server.Options{Translate: translate.Options{ControlPlane: "127.0.0.1:18000"},
					Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := cpuTime()
				commit, err := xs.Prepare(ctx, snap)
				if err != nil {
					b.Fatal(err)
				}
				commit()
				total += cpuTime() - start
				b.StopTimer()
				xs.Close()
				b.StartTimer()
			}
			full[-n] = float64(total.Nanoseconds()) / float64(b.N)
		})
		b.Run(fmt.Sprintf("three-readings/routes=%d", n), func(b *testing.B) {
			// Each consumer reading the model itself, as before the pipeline's one IR: xds
			// translating, ext_authz translating, the rate-limit rules translating.
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				log := slog.New(slog.DiscardHandler)
				xs, err := server.New(server.Options{Translate: translate.Options{ControlPlane: "127.0.0.1:18000"}, Logger: log, Registerer: prometheus.NewRegistry()})
				if err != nil {
					b.Fatal(err)
				}
				eng, err := extauthz.New(extauthz.Options{Logger: log, Registerer: prometheus.NewRegistry()})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := cpuTime()
				c1, err := xs.Prepare(ctx, snap)
				if err != nil {
					b.Fatal(err)
				}
				c2, err := eng.Prepare(ctx, snap)
				if err != nil {
					b.Fatal(err)
				}
				rules, _ := ratelimit.BuildRules(snap)
				c1()
				c2()
				rulesSink.Store(rules)
				total += cpuTime() - start
				b.StopTimer()
				xs.Close()
				b.StartTimer()
			}
			full[-2*n] = float64(total.Nanoseconds()) / float64(b.N)
		})
		b.Run(fmt.Sprintf("full/routes=%d", n), func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				p, _ := newRevisionPipeline(b)
				b.StartTimer()
				start := cpuTime()
				if err := p.ApplySnapshot(ctx, snap); err != nil {
					b.Fatal(err)
				}
				total += cpuTime() - start
			}
			per := float64(total.Nanoseconds()) / float64(b.N)
			full[n] = per
			b.ReportMetric(per/1e6, "cpu-ms/revision")
			if base := full[2500]; base > 0 {
				b.ReportMetric(per/base, "x_2500")
			}
			if alone := full[-n]; alone > 0 {
				b.ReportMetric(per/alone, "x_xds_alone")
			}
			if three := full[-2*n]; three > 0 {
				b.ReportMetric(per/three, "x_three_readings")
			}
		})
	}
	for _, event := range []string{"ban", "heartbeat"} {
		b.Run(event+"/routes=10000", func(b *testing.B) {
			snap := revisionModel(10000)
			// A WAF already banned someone: the first ban turns ext_authz on for public
			// routes (a translation of each, once); the next ones change the IP set only.
			ban, err := extauthz.WAFDenyRule("203.0.113.1", benchT0.Add(time.Hour), "anomaly", benchT0)
			if err != nil {
				b.Fatal(err)
			}
			snap.Revision++
			ban.Revision = snap.Revision
			snap.IPRules = []*model.IPRule{ban}
			p, eng := newRevisionPipeline(b)
			if err := p.ApplySnapshot(ctx, snap); err != nil {
				b.Fatal(err)
			}
			t0, c0 := p.TranslateStats(), eng.PolicyCompiles()
			rev := snap.Revision
			var total time.Duration
			i := 0
			for b.Loop() {
				i++
				rev++
				next := *snap
				next.Revision = rev
				switch event {
				case "ban":
					ban, err := extauthz.WAFDenyRule(fmt.Sprintf("198.51.%d.%d", i/250%250, i%250), benchT0.Add(time.Hour), "anomaly", benchT0)
					if err != nil {
						b.Fatal(err)
					}
					ban.Revision = rev
					next.IPRules = append(append([]*model.IPRule(nil), snap.IPRules...), ban)
				case "heartbeat":
					next.Services = append([]*model.Service(nil), snap.Services...)
					s := *next.Services[i%len(next.Services)]
					s.LastHeartbeat, s.Revision = benchT0.Add(time.Duration(i)*time.Second), rev
					next.Services[i%len(next.Services)] = &s
				}
				snap = &next
				start := cpuTime()
				if err := p.ApplySnapshot(ctx, snap); err != nil {
					b.Fatal(err)
				}
				total += cpuTime() - start
			}
			st := p.TranslateStats()
			b.ReportMetric(float64(st.Translated-t0.Translated)/float64(b.N), "translations/op")
			b.ReportMetric(float64(eng.PolicyCompiles()-c0)/float64(b.N), "compiles/op")
			per := float64(total.Nanoseconds()) / float64(b.N)
			b.ReportMetric(per/1e6, "cpu-ms/revision")
			if f := full[10000]; f > 0 {
				b.ReportMetric(per/f, "x_full")
			}
		})
	}
}
