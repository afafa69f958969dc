package server

import (
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// benchModel has n routes over 1,000 registered services (two instances each); every route
// has its own host and path, a timeout, retries and one service target. They are public and
// match any method, so the gRPC flavor serves them all too (it leaves out routes with
// ext_authz or a method condition).
func benchModel(n int) *model.Snapshot {
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}}
	for i := 0; i < 1000; i++ {
		for j := 0; j < 2; j++ {
			snap.Services = append(snap.Services, &model.Service{ID: fmt.Sprintf("svc-%04d-%d", i, j), Name: fmt.Sprintf("svc-%04d", i),
				Host: fmt.Sprintf("10.%d.%d.%d", i/250, i%250, j+1), Port: 8080})
		}
	}
	for i := 0; i < n; i++ {
		snap.Routes = append(snap.Routes, &model.Route{
			ID:          fmt.Sprintf("route-%05d", i),
			Hosts:       []string{fmt.Sprintf("h%d.example.com", i%100)},
			Conditions:  []model.Condition{{PathPattern: fmt.Sprintf("/api/v1/r%d/*", i)}},
			Targets:     []model.Target{{Service: fmt.Sprintf("svc-%04d", i%1000)}},
			RequireAuth: falsePtr(),
			Timeout:     model.Duration(30e9),
			Retries:     2,
			LoadBalance: "least_connections",
		})
	}
	return snap
}

// BenchmarkBuild measures translation, the Envoy and gRPC builds of three node groups,
// ValidateAll of every resource, the consistency checks and the content hashes: the whole of
// a first Prepare (empty memos: every resource is built). Compare routes=5000 and
// routes=10000 with the routes=1000 baseline for linearity.
func BenchmarkBuild(b *testing.B) {
	for _, n := range []int{1000, 5000, 10000} {
		snap := benchModel(n)
		to := translate.Options{ControlPlane: "127.0.0.1:18000"}
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				memos := map[envoy.Flavor]*envoy.Memo{envoy.FlavorEnvoy: envoy.NewMemo(), envoy.FlavorGRPC: envoy.NewMemo()}
				if _, err := buildSnapshot(snap, to, memos, envoy.NewSharedMemo(), nil); err != nil {
					b.Fatal(err)
				}
			}
			// CPU time is what the machine's load does not inflate (wall time does).
			b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkBuildChanged is Prepare of the next revision when one route changed (its timeout)
// or nothing did: the other routes and clusters come from the memos. The translation is
// still whole (it is cheap); the builds, ValidateAll and hashes are O(changed).
func BenchmarkBuildChanged(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		for _, changed := range []int{0, 1} {
			snap := benchModel(n)
			s, err := New(Options{Translate: translate.Options{ControlPlane: "127.0.0.1:18000"}, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.build(snap); err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("routes=%d/changed=%d", n, changed), func(b *testing.B) {
				b.ReportAllocs()
				cpu0 := cpuTime()
				i := 0
				for b.Loop() {
					if changed > 0 {
						i++
						r := *snap.Routes[n/2]
						r.Timeout = model.Duration(time.Duration(i%50+1) * time.Second)
						snap.Routes[n/2] = &r
					}
					if _, err := s.build(snap); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

// BenchmarkTranslate is translation alone (model to IR), for comparison with BenchmarkBuild.
func BenchmarkTranslate(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		snap := benchModel(n)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuTime()
			defer func() { b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op") }()
			for b.Loop() {
				if _, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTranslateValidate is translation plus the Envoy build with ValidateAll of every
// resource, for one node group (what the "translation + validation" names); the
// gRPC group, hashing and consistency checks are in BenchmarkBuild.
func BenchmarkTranslateValidate(b *testing.B) {
	for _, n := range []int{1000, 5000, 10000} {
		snap := benchModel(n)
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				cfg, err := translate.Translate(snap, translate.Options{ControlPlane: "127.0.0.1:18000"})
				if err != nil {
					b.Fatal(err)
				}
				if err := cfg.Validate(); err != nil {
					b.Fatal(err)
				}
				res, err := envoy.Build(cfg, envoy.Options{})
				if err != nil || len(res.RouteErrors) > 0 {
					b.Fatal(err, res.RouteErrors)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}
