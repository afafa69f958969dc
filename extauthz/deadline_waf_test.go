package extauthz

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/waf"
)

// expiringCtx reports its deadline as passed from its (after+1)-th Err call on: a deadline
// that passes at an exact point of the check, whatever the machine's speed.
type expiringCtx struct {
	context.Context
	calls, after int64
}

func (c *expiringCtx) Err() error {
	if atomic.AddInt64(&c.calls, 1) > c.after {
		return context.DeadlineExceeded
	}
	return nil
}

// A deadline that passes while the WAF inspects is an abandoned check (503
// deadline_exceeded, counted under stage "waf"), not a WAF block and not an allow: the WAF
// stops where it notices the deadline, and the engine looks once more after it.
func TestDeadlinePassedDuringWAFIsAnAbandonedCheck(t *testing.T) {
	reg := waf.NewRegistry(waf.RegistryOptions{Logger: quietLogger()})
	h := newHarness(t, Options{WAF: reg})
	h.apply(&model.Snapshot{Revision: 1, Routes: []*model.Route{
		publicRoute("guarded", func(r *model.Route) { r.WAF = &model.WAFSettings{} }),
	}})
	req := func() *Request {
		return FromCheckRequest(envoyReq{routeID: rid("guarded"), path: "/guarded?id=42"}.build())
	}
	count := &expiringCtx{Context: context.Background(), after: 1 << 62}
	if d := h.engine.Check(count, req()); !d.Allowed {
		t.Fatalf("clean request without a deadline: %s", d.Reason)
	}
	// The deadline passes just before the engine's last look, after the WAF answered.
	late := &expiringCtx{Context: context.Background(), after: count.calls - 1}
	d := h.engine.Check(late, req())
	if d.Allowed || d.Reason != ReasonDeadlineExceeded || d.Checker != CheckerDeadline {
		t.Fatalf("deadline passed during the WAF: allowed %v, checker %s, reason %s", d.Allowed, d.Checker, d.Reason)
	}
	if got := counterValue(t, h, "api_gateway_authz_checks_abandoned_total", map[string]string{"stage": "waf"}); got != 1 {
		t.Fatalf("abandoned at the WAF counted %v, want 1", got)
	}
}
