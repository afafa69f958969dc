package faults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// Three replicas with fixed-window reservations (RATE_LIMIT_RESERVE) on one Redis: 30
// callers spread over them, each calling until it is denied three times in a row, are
// admitted exactly the limit between them, most of it without a round trip to Redis.
func TestRateLimitReserveAcrossReplicas(t *testing.T) {
	rs := testutil.StartRedis(t)
	var gws []*testutil.Gateway
	for i := 0; i < 3; i++ {
		gws = append(gws, startReplica(t, rs.Addr, "RATE_LIMIT_RESERVE=30s", "LOG_LEVEL=warn"))
	}
	mustDo(t, gws[0], "POST", "/api/v1/management/rate-limits",
		`{"id":"rl-quota","strategy":"fixed_window","requests_per_unit":600,"time_unit":"1h"}`, nil, http.StatusCreated)
	mustDo(t, gws[0], "POST", "/api/v1/management/routes", jsonBody(map[string]any{
		"id": "quota", "require_auth": false, "conditions": []any{map[string]any{"path_pattern": "/quota/*"}},
		"targets":    []any{map[string]any{"host": "127.0.0.1", "port": 9}},
		"rate_limit": map[string]any{"policies": []string{"rl-quota"}},
	}), nil, http.StatusCreated)

	var clients []rlsv3.RateLimitServiceClient
	for _, g := range gws {
		c := rlsv3.NewRateLimitServiceClient(dialGRPC(t, g.GRPCAddr()))
		clients = append(clients, c)
	}
	// Every replica has the limit (the rule reaches the others through the shared store):
	// a request with cost 0 reads the counter and reports the limit.
	for i, c := range clients {
		eventually(t, 20*time.Second, fmt.Sprintf("replica %d to have the limit", i), func() bool {
			r := rateLimitRequest("quota", "rl-quota")
			r.HitsAddend = 0
			r.Descriptors[0].IsNegativeHits = true
			res, err := c.ShouldRateLimit(t.Context(), r)
			return err == nil && len(res.Statuses) == 1 && res.Statuses[0].GetCurrentLimit().GetRequestsPerUnit() == 600
		})
	}

	var admitted, denied atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 30; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := clients[w%3]
			for run, i := 0, 0; run < 3 && i < 200; i++ {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				res, err := c.ShouldRateLimit(ctx, rateLimitRequest("quota", "rl-quota"))
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
				if res.GetOverallCode() == rlsv3.RateLimitResponse_OK {
					admitted.Add(1)
					run = 0
				} else {
					denied.Add(1)
					run++
				}
			}
		}(w)
	}
	wg.Wait()
	if admitted.Load() != 600 {
		t.Fatalf("admitted %d (denied %d), want exactly 600", admitted.Load(), denied.Load())
	}
	used := 0
	for _, g := range gws {
		used += reservedUnits(t, g, "used")
	}
	t.Logf("admitted %d, denied %d; %d admitted from reservations", admitted.Load(), denied.Load(), used)
	if used < 150 {
		t.Errorf("only %d of 600 admissions from reservations", used)
	}

	// A bad value stops the binary at start, naming the variable.
	cmd := exec.Command(testutil.BuildGateway(t), "serve")
	cmd.Env = []string{"RATE_LIMIT_RESERVE=soon", "PORT=0", "GRPC_PORT=0", "METRICS_PORT=0", "DATA_DIR=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "RATE_LIMIT_RESERVE") {
		t.Errorf("RATE_LIMIT_RESERVE=soon: %v\n%s", err, out)
	}
}

var reservedRe = regexp.MustCompile(`(?m)^api_gateway_rate_limit_reserved_units_total\{event="(\w+)"\} (\d+)`)

// reservedUnits reads api_gateway_rate_limit_reserved_units_total{event} from a replica.
func reservedUnits(t *testing.T, g *testutil.Gateway, event string) int {
	t.Helper()
	res, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", g.MetricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, m := range reservedRe.FindAllStringSubmatch(string(b), -1) {
		if m[1] == event {
			n, _ := strconv.Atoi(m[2])
			return n
		}
	}
	return 0
}
