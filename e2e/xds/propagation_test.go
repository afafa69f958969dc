package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// TestPropagation100Clients: with 1,000 routes and 100 connected grpc-go xDS clients, a
// REST write is acknowledged by every client; it logs p50/p99 of write → ACK over 10 writes
// (1,000 samples) and the control plane's RSS, and fails when p99 exceeds 1 s.
func TestPropagation100Clients(t *testing.T) {
	a := xdstest.StartBackend(t, "a")
	var routes []any
	for i := 0; i < 1000; i++ {
		routes = append(routes, map[string]any{
			"id": fmt.Sprintf("bulk-%04d", i), "hosts": []string{fmt.Sprintf("h%d.bulk.test", i%50)}, "require_auth": false,
			"conditions": []any{map[string]any{"path_pattern": fmt.Sprintf("/svc%d/*", i)}},
			"targets":    []any{target(a, 1)},
		})
	}
	prop := func(timeout int) map[string]any {
		return map[string]any{"id": "prop", "hosts": []string{"prop.test"}, "require_auth": false, "timeout": fmt.Sprintf("%ds", timeout),
			"conditions": []any{map[string]any{"path_pattern": "/*"}}, "targets": []any{target(a, 1)}}
	}
	routes = append(routes, prop(1))
	file := filepath.Join(t.TempDir(), "gateway.json")
	raw, _ := json.Marshal(map[string]any{"routes": routes})
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	g := testutil.StartGateway(t, testutil.GatewayOptions{Args: []string{"--config", file}, Env: []string{"LOG_LEVEL=info"}})
	t.Logf("gateway with 1,001 routes ready in %v", time.Since(t0))
	t0 = time.Now()

	const clients = 100
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		cc := xdstest.Dial(t, g.GRPCAddr(), fmt.Sprintf("prop-%03d", i), "prop.test")
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := xdstest.Call(ctx, cc); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d clients connected and served in %v", clients, time.Since(t0))
	memLine := func() string {
		_, raw := getMetrics(t, g)
		v := func(name string) float64 {
			for _, line := range strings.Split(raw, "\n") {
				if strings.HasPrefix(line, name+" ") {
					f, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
					return f
				}
			}
			return 0
		}
		return fmt.Sprintf("RSS %.1f MiB, Go heap in use %.1f MiB, heap idle %.1f MiB (released %.1f), stacks %.1f MiB, Go sys %.1f MiB, %v goroutines",
			v("process_resident_memory_bytes")/(1<<20), v("go_memstats_heap_inuse_bytes")/(1<<20), v("go_memstats_heap_idle_bytes")/(1<<20),
			v("go_memstats_heap_released_bytes")/(1<<20), v("go_memstats_stack_inuse_bytes")/(1<<20), v("go_memstats_sys_bytes")/(1<<20), v("go_goroutines"))
	}
	t.Logf("memory with 100 clients connected: %s", memLine())

	type nodesDoc struct {
		Versions map[string]map[string]string `json:"versions"`
		Nodes    []struct {
			ID    string            `json:"id"`
			Acked map[string]string `json:"acked"`
		} `json:"nodes"`
	}
	var samples, puts []time.Duration
	for w := 0; w < 10; w++ {
		start := time.Now()
		mustDo(t, g, "PUT", "/api/v1/management/routes/prop", prop(w+2), 200)
		puts = append(puts, time.Since(start))
		acked := map[string]bool{}
		target := ""
		for len(acked) < clients {
			if time.Since(start) > 20*time.Second {
				t.Fatalf("write %d: %d of %d clients acknowledged", w, len(acked), clients)
			}
			var doc nodesDoc
			g.Do("GET", "/api/v1/management/xds/nodes", nil, &doc)
			now := time.Since(start)
			if target == "" {
				target = doc.Versions["grpc"]["rds"]
			}
			for _, n := range doc.Nodes {
				if strings.HasPrefix(n.ID, "prop-") && !acked[n.ID] && target != "" && n.Acked["rds"] == doc.Versions["grpc"]["rds"] {
					acked[n.ID] = true
					samples = append(samples, now)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	p := func(q float64) time.Duration { return samples[int(q*float64(len(samples)-1))] }
	t.Logf("PUT (validated, applied by every consumer) took %v", puts)
	rss := metricValue(t, g, "process_resident_memory_bytes")
	heap := metricValue(t, g, "go_memstats_heap_inuse_bytes")
	t.Logf("write → ACK over %d samples (100 clients, 1,001 routes): p50 %v, p99 %v, max %v; control-plane RSS %.1f MiB (Go heap in use %.1f MiB; every component, WAF included)",
		len(samples), p(0.50), p(0.99), samples[len(samples)-1], rss/(1<<20), heap/(1<<20))
	t.Logf("memory after the writes: %s", memLine())
	// Once writes settle the pipeline returns the heap left over from building revisions to
	// the OS (internal/pipeline scavenge): the steady-state RSS of 1,001 routes and 100 clients.
	time.Sleep(3 * time.Second)
	t.Logf("memory once writes settled: %s", memLine())
	if p(0.99) > time.Second {
		t.Fatalf("p99 write → ACK %v exceeds 1s", p(0.99))
	}
}

func metricValue(t *testing.T, g *testutil.Gateway, name string) float64 {
	t.Helper()
	_, raw := getMetrics(t, g)
	for _, line := range strings.Split(raw, "\n") {
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			if err == nil {
				return v
			}
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}
