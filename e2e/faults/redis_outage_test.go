package faults

import (
	"context"
	"fmt"
	"net/http"
	"slices"
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

// outcome counts what one kind of call got in each phase. When the right answer depends on
// the phase (rate limits), an answer is judged only when the phase was the same before and
// after the call: a call that straddles a kill or a restart may rightly see either state,
// so it is counted apart (straddled), never judged. When it does not (ext_authz), every
// answer is judged, under the phase it started in.
type outcome struct {
	name      string
	judged    []int32               // the phases whose answers must all be right
	anyPhase  bool                  // the right answer is the same in every phase
	ok        [nPhases]atomic.Int64 // the expected answer
	bad       [nPhases]atomic.Int64 // a wrong answer or an error
	straddled atomic.Int64          // calls across a phase change, not judged
	mu        sync.Mutex
	errs      []string
}

// record judges one answer given the phases read before and after the call.
func (o *outcome) record(before, after int32, good bool, detail string) {
	if before != after && !o.anyPhase {
		o.straddled.Add(1)
		return
	}
	if good {
		o.ok[before].Add(1)
		return
	}
	if o.bad[before].Add(1) <= 3 && slices.Contains(o.judged, before) {
		o.mu.Lock()
		o.errs = append(o.errs, fmt.Sprintf("%s (%s): %s", o.name, phaseNames[before], detail))
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
	// ext_authz never errors, not even while Redis is being killed or restarted; the rate
	// limits are judged in the steady phases.
	all := []int32{phaseUp, phaseKilling, phaseDown, phaseRecovering, phaseRecovered}
	steady := []int32{phaseUp, phaseDown, phaseRecovered}
	allowed := &outcome{name: "check valid key", judged: all, anyPhase: true}
	denied := &outcome{name: "check bad key", judged: all, anyPhase: true}
	open := &outcome{name: "rate limit fail-open", judged: steady}
	closed := &outcome{name: "rate limit fail-closed", judged: steady}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				n := int(seq.Add(1))
				cctx, c := context.WithTimeout(loadCtx, 2*time.Second)
				p := phase.Load()
				res, err := authz.Check(cctx, checkRequest("orders", key.Key, n))
				q := phase.Load()
				switch {
				case loadCtx.Err() != nil:
				case err != nil:
					allowed.record(p, q, false, err.Error())
				default:
					allowed.record(p, q, res.GetStatus().GetCode() == int32(code.Code_OK), fmt.Sprintf("status %v", res.GetStatus()))
				}
				p = phase.Load()
				res, err = authz.Check(cctx, checkRequest("orders", "agw_not_a_real_key", n))
				q = phase.Load()
				switch {
				case loadCtx.Err() != nil:
				case err != nil:
					denied.record(p, q, false, err.Error())
				default:
					denied.record(p, q, res.GetStatus().GetCode() != int32(code.Code_OK), "a bad key was allowed")
				}
				for _, c := range []struct {
					o      *outcome
					route  string
					policy string
					closed bool
				}{{open, "orders", "rl-open", false}, {closed, "payments", "rl-closed", true}} {
					p := phase.Load()
					rr, err := rls.ShouldRateLimit(cctx, rateLimitRequest(c.route, c.policy))
					q := phase.Load()
					want := rlsv3.RateLimitResponse_OK
					if c.closed && p == phaseDown {
						want = rlsv3.RateLimitResponse_OVER_LIMIT
					}
					switch {
					case loadCtx.Err() != nil:
					case err != nil:
						c.o.record(p, q, false, err.Error())
					default:
						c.o.record(p, q, rr.GetOverallCode() == want, fmt.Sprintf("got %v, want %v", rr.GetOverallCode(), want))
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
		for _, p := range steady {
			if o.ok[p].Load() == 0 {
				t.Errorf("%s: no expected answer in phase %s (%d wrong)", o.name, phaseNames[p], o.bad[p].Load())
			}
		}
		for _, p := range o.judged {
			if n := o.bad[p].Load(); n > 0 {
				t.Errorf("%s: %d wrong answers in phase %s", o.name, n, phaseNames[p])
			}
		}
		for _, e := range o.errs {
			t.Log(e)
		}
		t.Logf("%s: up %d, down %d, recovered %d (across a phase change, not judged: %d)", o.name,
			o.ok[phaseUp].Load(), o.ok[phaseDown].Load(), o.ok[phaseRecovered].Load(), o.straddled.Load())
	}
	if t.Failed() {
		logComponent(t, g, "ratelimit")
	}
}
