package faults

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// The management API under 200 concurrent clients for FAULTS_API_LOAD_DURATION (default
// 30s): each client creates, reads, updates, lists and deletes its own routes. No answer
// may be a 5xx; conflicts (409) and validation answers are not expected either, since each
// client only touches its own objects. Latency percentiles are reported.
func TestManagementAPIUnderLoad(t *testing.T) {
	const clients = 200
	dur := envDuration("FAULTS_API_LOAD_DURATION", 30*time.Second)
	g := testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"LOG_LEVEL=warn"}})
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}

	type sample struct {
		op  string
		d   time.Duration
		err string
	}
	var mu sync.Mutex
	var samples []sample
	var bad atomic.Int64
	do := func(op, method, path, body string, want int) {
		req, _ := http.NewRequest(method, g.URL(path), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+g.Token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		start := time.Now()
		res, err := hc.Do(req)
		d := time.Since(start)
		s := sample{op: op, d: d}
		var raw []byte
		code := 0
		if err != nil {
			s.err = err.Error()
		} else {
			raw, _ = io.ReadAll(res.Body)
			res.Body.Close()
			code = res.StatusCode
			if code != want {
				s.err = fmt.Sprintf("%s %s: %d %s", method, path, code, raw)
			}
		}
		if s.err != "" && bad.Add(1) <= 5 {
			t.Errorf("%s", s.err)
		}
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	}
	route := func(id string, port int) string {
		return `{"id":"` + id + `","conditions":[{"path_pattern":"/load/` + id + `/*"}],` +
			`"targets":[{"host":"127.0.0.1","port":` + fmt.Sprint(port) + `}],"require_auth":false}`
	}

	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; time.Now().Before(deadline); n++ {
				id := fmt.Sprintf("load-%d-%d", c, n)
				do("create", "POST", "/api/v1/management/routes", route(id, 8000+n%1000), http.StatusCreated)
				do("get", "GET", "/api/v1/management/routes/"+id, "", http.StatusOK)
				do("update", "PUT", "/api/v1/management/routes/"+id, route(id, 9000+n%1000), http.StatusOK)
				if n%5 == 0 {
					do("list", "GET", "/api/v1/management/routes", "", http.StatusOK)
				}
				do("delete", "DELETE", "/api/v1/management/routes/"+id, "", http.StatusNoContent)
			}
		}()
	}
	wg.Wait()

	byOp := map[string][]time.Duration{}
	var all []time.Duration
	for _, s := range samples {
		byOp[s.op] = append(byOp[s.op], s.d)
		all = append(all, s.d)
	}
	pct := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[int(float64(len(ds)-1)*p)]
	}
	t.Logf("%d requests from %d clients in %s (%.0f req/s): p50 %s p99 %s max %s",
		len(all), clients, dur, float64(len(all))/dur.Seconds(), pct(all, 0.50), pct(all, 0.99), pct(all, 1))
	ops := make([]string, 0, len(byOp))
	for op := range byOp {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		ds := byOp[op]
		t.Logf("  %-6s n=%-6d p50 %-10s p99 %s", op, len(ds), pct(ds, 0.50), pct(ds, 0.99))
	}
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed or answered unexpectedly (first ones above)", n, len(all))
	}
	if len(all) < clients*4 {
		t.Fatalf("only %d requests completed", len(all))
	}
	// Nothing is left behind: every client deleted what it created.
	if left := listIDs(t, g, "routes"); len(left) != 0 {
		t.Fatalf("%d routes left after the load", len(left))
	}
}
