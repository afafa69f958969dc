package faults

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/genproto/googleapis/rpc/code"

	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

// Load phases: results are only judged inside a steady phase, not while Redis is being
// killed or restarted.
const (
	phaseUp int32 = iota
	phaseKilling
	phaseDown
	phaseRecovering
	phaseRecovered
	nPhases
)

var phaseNames = [nPhases]string{"up", "killing", "down", "recovering", "recovered"}

// outcome counts what one kind of call got in each phase.
type outcome struct {
	name string
	ok   [nPhases]atomic.Int64 // the expected answer
	bad  [nPhases]atomic.Int64 // a wrong answer or an error
	mu   sync.Mutex
	errs []string
}

func (o *outcome) record(phase int32, good bool, detail string) {
	if good {
		o.ok[phase].Add(1)
		return
	}
	if o.bad[phase].Add(1) <= 3 {
		o.mu.Lock()
		o.errs = append(o.errs, fmt.Sprintf("%s (%s): %s", o.name, phaseNames[phase], detail))
		o.mu.Unlock()
	}
}

// Kill Redis while ext_authz and rate-limit load runs:
//   - ext_authz keeps answering from its in-memory tables (valid key allowed, bad key denied,
//     never an error);
//   - each rate limit follows its fail mode (open: allowed; closed: over limit);
//   - xDS keeps serving the last snapshot (a connected client keeps routing, a new client
//     gets the configuration);
//   - when Redis returns, everything recovers without a restart: limits count again, the API
//     writes again, and a change flows to the connected xDS client.
func TestRedisOutage(t *testing.T) {
	rs := startPersistentRedis(t)
	g := startReplica(t, rs.Addr)
	a, b := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b")

	var key struct {
		Key string `json:"key"`
	}
	mustDo(t, g, "POST", "/api/v1/management/api-keys", `{"name":"faults"}`, &key, http.StatusCreated)
	if key.Key == "" {
		t.Fatal("no secret in the create answer")
	}
	for _, p := range []string{
		`{"id":"rl-open","strategy":"fixed_window","requests_per_unit":100000000,"time_unit":"1h","fail_mode":"open"}`,
		`{"id":"rl-closed","strategy":"fixed_window","requests_per_unit":100000000,"time_unit":"1h","fail_mode":"closed"}`,
	} {
		mustDo(t, g, "POST", "/api/v1/management/rate-limits", p, nil, http.StatusCreated)
	}
	mustDo(t, g, "POST", "/api/v1/management/routes", jsonBody(map[string]any{
		"id": "orders", "require_auth": true, "conditions": []any{map[string]any{"path_pattern": "/orders/*"}},
		"targets":    []any{map[string]any{"host": "127.0.0.1", "port": 9}},
		"rate_limit": map[string]any{"policies": []string{"rl-open"}},
	}), nil, http.StatusCreated)
	mustDo(t, g, "POST", "/api/v1/management/routes", jsonBody(map[string]any{
		"id": "payments", "require_auth": true, "conditions": []any{map[string]any{"path_pattern": "/payments/*"}},
		"targets":    []any{map[string]any{"host": "127.0.0.1", "port": 9}},
		"rate_limit": map[string]any{"policies": []string{"rl-closed"}},
	}), nil, http.StatusCreated)
	mustDo(t, g, "POST", "/api/v1/management/routes", jsonBody(grpcRoute("echo", "echo.faults", a)), nil, http.StatusCreated)

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	xc := dialXDS(t, g.GRPCAddr(), "outage-client", "echo.faults")
	eventually(t, 20*time.Second, "the xDS client to reach backend a", func() bool {
		got, err := xdstest.Call(ctx, xc)
		return err == nil && got == "a"
	})

	cc := dialGRPC(t, g.GRPCAddr())
	authz := authv3.NewAuthorizationClient(cc)
	rls := rlsv3.NewRateLimitServiceClient(cc)
	var phase atomic.Int32
	allowed, denied := &outcome{name: "check valid key"}, &outcome{name: "check bad key"}
	open, closed := &outcome{name: "rate limit fail-open"}, &outcome{name: "rate limit fail-closed"}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				p := phase.Load()
				n := int(seq.Add(1))
				cctx, c := context.WithTimeout(loadCtx, 2*time.Second)
				res, err := authz.Check(cctx, checkRequest("orders", key.Key, n))
				switch {
				case loadCtx.Err() != nil:
				case err != nil:
					allowed.record(p, false, err.Error())
				default:
					allowed.record(p, res.GetStatus().GetCode() == int32(code.Code_OK), fmt.Sprintf("status %v", res.GetStatus()))
				}
				res, err = authz.Check(cctx, checkRequest("orders", "agw_not_a_real_key", n))
				switch {
				case loadCtx.Err() != nil:
				case err != nil:
					denied.record(p, false, err.Error())
				default:
					denied.record(p, res.GetStatus().GetCode() != int32(code.Code_OK), "a bad key was allowed")
				}
				wantClosed := rlsv3.RateLimitResponse_OK
				if p == phaseDown {
					wantClosed = rlsv3.RateLimitResponse_OVER_LIMIT
				}
				for _, c := range []struct {
					o      *outcome
					route  string
					policy string
					want   rlsv3.RateLimitResponse_Code
				}{{open, "orders", "rl-open", rlsv3.RateLimitResponse_OK}, {closed, "payments", "rl-closed", wantClosed}} {
					rr, err := rls.ShouldRateLimit(cctx, rateLimitRequest(c.route, c.policy))
					switch {
					case loadCtx.Err() != nil:
					case err != nil:
						c.o.record(p, false, err.Error())
					default:
						c.o.record(p, rr.GetOverallCode() == c.want, fmt.Sprintf("got %v, want %v", rr.GetOverallCode(), c.want))
					}
				}
				c()
			}
		}()
	}

	time.Sleep(500 * time.Millisecond) // load before the outage
	phase.Store(phaseKilling)
	rs.Stop()
	phase.Store(phaseDown)

	// During the outage: xDS serves the last snapshot to connected and new clients; the API
	// cannot write (503), and says so on /ready.
	for i := 0; i < 10; i++ {
		if got, err := xdstest.Call(ctx, xc); err != nil || got != "a" {
			t.Errorf("connected xDS client during the outage: %q %v", got, err)
		}
	}
	late := dialXDS(t, g.GRPCAddr(), "late-client", "echo.faults")
	eventually(t, 20*time.Second, "a client connecting during the outage to get the last snapshot", func() bool {
		got, err := xdstest.Call(ctx, late)
		return err == nil && got == "a"
	})
	if code, body := g.Do("POST", "/api/v1/management/tenants", `{"id":"during-outage"}`, nil); code != http.StatusServiceUnavailable {
		t.Errorf("write during the outage: %d %s (want 503)", code, body)
	}
	if code, _ := g.Do("GET", "/ready", nil, nil); code != http.StatusServiceUnavailable {
		t.Errorf("/ready during the outage: %d (want 503)", code)
	}
	time.Sleep(time.Second) // more load while Redis is down

	phase.Store(phaseRecovering)
	rs.Restart()
	// Recovery without a restart: the API writes again, fail-closed limits count again.
	eventually(t, 15*time.Second, "the API to write again", func() bool {
		code, _ := g.Do("POST", "/api/v1/management/tenants", `{"id":"after-outage"}`, nil)
		return code == http.StatusCreated || code == http.StatusConflict
	})
	var last string
	if !within(15*time.Second, func() bool {
		rr, err := rls.ShouldRateLimit(ctx, rateLimitRequest("payments", "rl-closed"))
		last = fmt.Sprintf("%v %v", rr.GetOverallCode(), err)
		return err == nil && rr.GetOverallCode() == rlsv3.RateLimitResponse_OK
	}) {
		t.Errorf("the fail-closed limit does not allow again after Redis returned: %s", last)
	}
	phase.Store(phaseRecovered)
	// Every object written before the outage is still there (AOF), and a change reaches the
	// connected xDS client.
	mustDo(t, g, "GET", "/api/v1/management/routes/orders", nil, nil, http.StatusOK)
	mustDo(t, g, "PUT", "/api/v1/management/routes/echo", jsonBody(grpcRoute("echo", "echo.faults", b)), nil, http.StatusOK)
	eventually(t, 20*time.Second, "the connected xDS client to follow a change after the outage", func() bool {
		got, err := xdstest.Call(ctx, xc)
		return err == nil && got == "b"
	})
	time.Sleep(500 * time.Millisecond) // load after recovery
	stopLoad()
	wg.Wait()

	for _, o := range []*outcome{allowed, denied, open, closed} {
		for _, p := range []int32{phaseUp, phaseDown, phaseRecovered} {
			if o.ok[p].Load() == 0 {
				t.Errorf("%s: no expected answer in phase %s (%d wrong)", o.name, phaseNames[p], o.bad[p].Load())
			}
			if n := o.bad[p].Load(); n > 0 {
				t.Errorf("%s: %d wrong answers in phase %s", o.name, n, phaseNames[p])
			}
		}
		// ext_authz never errors, not even while Redis is being killed or restarted.
		if o == allowed || o == denied {
			for _, p := range []int32{phaseKilling, phaseRecovering} {
				if n := o.bad[p].Load(); n > 0 {
					t.Errorf("%s: %d wrong answers while Redis was %s", o.name, n, phaseNames[p])
				}
			}
		}
		for _, e := range o.errs {
			t.Log(e)
		}
		t.Logf("%s: up %d, down %d, recovered %d", o.name, o.ok[phaseUp].Load(), o.ok[phaseDown].Load(), o.ok[phaseRecovered].Load())
	}
}
