package extauthz

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/api-gateway/api-gateway/model"
)

// Check over real gRPC on loopback with many concurrent streams. Sub-benchmarks report
// p50/p99 latency, requests/s, and x_floor: throughput relative to the "floor" server (it
// allows everything without looking), measured in the same run. Run all of them together:
//
//	go test -run '^$' -bench 'BenchmarkCheck' -benchtime 20000x ./extauthz/

type allowAll struct {
	authv3.UnimplementedAuthorizationServer
}

func (allowAll) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

type benchCase struct {
	name   string
	client authv3.AuthorizationClient
	req    *authv3.CheckRequest
}

// benchSetup builds one engine configured for every case, behind one gRPC server.
func benchSetup(b *testing.B) ([]benchCase, *Engine) {
	h := newHarness(b, Options{Clock: time.Now})
	geo, err := OpenGeoDB(filepath.Join(geoDir(b), "GeoIP2-Country-Test.mmdb"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { geo.Close() })
	h.engine.geo = geo
	k1 := genKey(b, "k1", "RS256")
	srv := newJWKSServer(b, k1)
	key, secret := newKey(b, "bench", func(k *model.APIKey) {
		// The key and the token of full_chain name the same principal (user and tenant).
		k.Tenant, k.UserID, k.Scopes = "acme", "user-1", []string{"read"}
		k.Restrictions = &model.KeyRestrictions{AllowedIPs: []string{"81.2.69.0/24"}}
	})
	h.apply(&model.Snapshot{Revision: 1,
		Routes: []*model.Route{
			route("keyonly", func(r *model.Route) {
				r.Auth = &model.RouteAuth{Methods: []string{"api_key"}, Scopes: []string{"read"}}
			}),
			route("jwtonly", func(r *model.Route) { r.Auth = &model.RouteAuth{Methods: []string{"jwt"}, Scopes: []string{"read"}} }),
			route("full", func(r *model.Route) {
				r.Tenant = "acme"
				r.Auth = &model.RouteAuth{Scopes: []string{"read"}, Policies: []string{"p"}, IPRules: []string{"allow-gb"},
					ClaimsToHeaders: map[string]string{"email": "x-email"}}
			}),
		},
		APIKeys: []*model.APIKey{key},
		IPRules: []*model.IPRule{
			{ID: "deny-some", Action: "deny", CIDRs: []string{"203.0.113.0/24", "198.51.100.7", "2001:db8::/32"}},
			{ID: "allow-gb", Action: "allow", CIDRs: []string{"81.2.69.0/24"}, Routes: []string{"full"}},
		},
		Policies: []*model.Policy{{ID: "p", Routes: []string{"full"}, AllowCountries: []string{"GB", "SE"}, Rules: []model.PolicyRule{
			{Expression: `request.method == "DELETE" && !("admin" in identity.roles)`, Action: "deny"},
			{Expression: `identity.tenant != route.tenant`, Action: "deny"},
		}}},
		Settings: &model.Settings{ID: model.SettingsID, Auth: &model.AuthSettings{JWTIssuers: []model.JWTIssuer{
			{Issuer: testIssuer, JWKSURI: srv.URL, Audiences: []string{"api"}}}}},
	})
	tok := k1.sign(b, jwt.MapClaims{"iss": testIssuer, "aud": "api", "sub": "user-1", "tenant_id": "acme",
		"scope": "read", "email": "u@example.com", "exp": time.Now().Add(time.Hour).Unix()})
	src := "81.2.69.142" // GB
	floor := startServer(b, func(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, allowAll{}) })
	mk := func(route string, hdr map[string]string) *authv3.CheckRequest {
		return envoyReq{routeID: rid(route), src: src, path: "/" + route + "/items/42?page=2", headers: hdr, id: "bench-req"}.build()
	}
	cases := []benchCase{
		{"floor", floor, mk("keyonly", map[string]string{"x-api-key": secret})},
		{"api_key", h.client, mk("keyonly", map[string]string{"x-api-key": secret})},
		{"jwt_rs256", h.client, mk("jwtonly", bearer(tok))},
		{"full_chain", h.client, mk("full", map[string]string{"x-api-key": secret, "authorization": "Bearer " + tok})},
	}
	for _, c := range cases {
		resp, err := c.client.Check(context.Background(), c.req)
		if err != nil || resp.GetOkResponse() == nil {
			b.Fatalf("%s: not allowed: %v %s", c.name, err, resp.GetDeniedResponse().GetBody())
		}
	}
	return cases, h.engine
}

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	i := int(float64(len(lat)-1) * p)
	return lat[i]
}

// cpuTime is the process's user+system CPU time (client and server share the process, alike
// for the floor and the engine). Unlike wall time it does not depend on other processes.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runClosed sends n requests from `workers` concurrent streams and returns the latencies,
// the wall time and the CPU time.
func runClosed(b *testing.B, c authv3.AuthorizationClient, req *authv3.CheckRequest, n, workers int) ([]time.Duration, time.Duration, time.Duration) {
	var mu sync.Mutex
	all := make([]time.Duration, 0, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), cpuTime()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, n/workers+1)
			for next.Add(1) <= int64(n) {
				t0 := time.Now()
				resp, err := c.Check(context.Background(), req)
				lat = append(lat, time.Since(t0))
				if err != nil || resp.GetOkResponse() == nil {
					b.Errorf("denied: %v", err)
					return
				}
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return all, time.Since(start), cpuTime() - cpu0
}

// BenchmarkCheck: closed-loop throughput with 64 concurrent streams. Each sub-benchmark
// interleaves rounds against the floor server and against the engine, so the machine's
// load affects both alike; x_floor is the engine's throughput over the floor's.
func BenchmarkCheck(b *testing.B) {
	cases, _ := benchSetup(b)
	floor := cases[0]
	const workers, round = 64, 1000
	for _, c := range cases[1:] {
		b.Run(c.name, func(b *testing.B) {
			var caseLat, floorLat []time.Duration
			var caseT, floorT, caseCPU, floorCPU time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += round {
				n := min(round, b.N-done)
				l, d, cpu := runClosed(b, floor.client, c.req, n, workers) // the same request
				floorLat, floorT, floorCPU = append(floorLat, l...), floorT+d, floorCPU+cpu
				l, d, cpu = runClosed(b, c.client, c.req, n, workers)
				caseLat, caseT, caseCPU = append(caseLat, l...), caseT+d, caseCPU+cpu
			}
			b.StopTimer()
			sort.Slice(caseLat, func(i, j int) bool { return caseLat[i] < caseLat[j] })
			sort.Slice(floorLat, func(i, j int) bool { return floorLat[i] < floorLat[j] })
			rps := float64(len(caseLat)) / caseT.Seconds()
			frps := float64(len(floorLat)) / floorT.Seconds()
			b.ReportMetric(float64(percentile(caseLat, 0.50).Microseconds()), "p50_us")
			b.ReportMetric(float64(percentile(caseLat, 0.99).Microseconds()), "p99_us")
			b.ReportMetric(rps, "req/s")
			b.ReportMetric(float64(percentile(floorLat, 0.50).Microseconds()), "floor_p50_us")
			b.ReportMetric(float64(percentile(floorLat, 0.99).Microseconds()), "floor_p99_us")
			b.ReportMetric(frps, "floor_req/s")
			b.ReportMetric(rps/frps, "x_floor")
			// CPU per request (client + server): the throughput ratio on a CPU-bound host,
			// whatever else runs on it.
			b.ReportMetric(float64(caseCPU.Microseconds())/float64(len(caseLat)), "cpu_us/req")
			b.ReportMetric(float64(floorCPU.Microseconds())/float64(len(floorLat)), "floor_cpu_us/req")
			b.ReportMetric(floorCPU.Seconds()/caseCPU.Seconds(), "x_floor_cpu")
		})
	}
}

// BenchmarkCheckOpenLoop: open-loop load at 1,000 and 5,000 requests/s (latency measured
// from each request's scheduled send time, so queueing counts), floor and full chain.
// b.N requests per sub-benchmark.
func BenchmarkCheckOpenLoop(b *testing.B) {
	cases, _ := benchSetup(b)
	const workers = 50
	for _, rate := range []int{1000, 5000} {
		for _, c := range cases {
			if c.name != "floor" && c.name != "full_chain" {
				continue
			}
			b.Run(fmt.Sprintf("%drps/%s", rate, c.name), func(b *testing.B) {
				interval := time.Second * workers / time.Duration(rate)
				var mu sync.Mutex
				var all, allSvc []time.Duration
				var wg sync.WaitGroup
				per := (b.N + workers - 1) / workers
				b.ResetTimer()
				start := time.Now()
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						lat := make([]time.Duration, 0, per)
						svc := make([]time.Duration, 0, per)
						next := start.Add(time.Duration(w) * interval / workers)
						for i := 0; i < per; i++ {
							if d := time.Until(next); d > 0 {
								time.Sleep(d)
							}
							t0 := time.Now()
							_, err := c.client.Check(context.Background(), c.req)
							lat = append(lat, time.Since(next))
							svc = append(svc, time.Since(t0))
							if err != nil {
								b.Error(err)
								return
							}
							next = next.Add(interval)
						}
						mu.Lock()
						all = append(all, lat...)
						allSvc = append(allSvc, svc...)
						mu.Unlock()
					}(w)
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
				sort.Slice(allSvc, func(i, j int) bool { return allSvc[i] < allSvc[j] })
				// p50/p99: from the send; sched_p99: from the scheduled send time (includes
				// the pacer's own timer lateness and any queueing).
				b.ReportMetric(float64(percentile(allSvc, 0.50).Microseconds()), "p50_us")
				b.ReportMetric(float64(percentile(allSvc, 0.99).Microseconds()), "p99_us")
				b.ReportMetric(float64(percentile(all, 0.99).Microseconds()), "sched_p99_us")
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
			})
		}
	}
}

// BenchmarkEngine measures the engine alone (no gRPC): the cost of the decision itself.
func BenchmarkEngine(b *testing.B) {
	cases, e := benchSetup(b)
	for _, c := range cases[1:] {
		b.Run(c.name, func(b *testing.B) {
			r := FromCheckRequest(c.req)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if d := e.Check(context.Background(), r); !d.Allowed {
					b.Fatal(d.Reason)
				}
			}
		})
	}
}
