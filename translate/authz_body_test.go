package translate

import (
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// TestAuthzBodyAndTimeoutFollowWAF: a WAF route has Envoy buffer the WAF's whole
// max_request_body_size (10 MiB by default, never the old 8 KiB) and gets the WAF's
// check_timeout (10 s by default); a route without a WAF buffers nothing and keeps the
// filter's timeout.
func TestAuthzBodyAndTimeoutFollowWAF(t *testing.T) {
	snap := &model.Snapshot{Settings: &model.Settings{ID: model.SettingsID}}
	for _, c := range []struct {
		name    string
		waf     *model.WAFSettings
		body    bool
		bytes   uint32
		timeout time.Duration
	}{
		{"defaults", &model.WAFSettings{}, true, 10 << 20, 10 * time.Second},
		{"tuned", &model.WAFSettings{MaxRequestBodySize: 1 << 20, CheckTimeout: model.Duration(45 * time.Second)}, true, 1 << 20, 45 * time.Second},
		{"largest", &model.WAFSettings{MaxRequestBodySize: model.MaxWAFRequestBodySize}, true, model.MaxWAFRequestBodySize, 10 * time.Second},
		{"waf off", &model.WAFSettings{Enabled: boolPtr(false), CheckTimeout: model.Duration(time.Minute)}, false, 0, 0},
		{"no waf", nil, false, 0, 0},
	} {
		r := &model.Route{ID: "r", RequireAuth: boolPtr(true), WAF: c.waf}
		a := newInputs(snap, time.Time{}).authz(r)
		if a.WithBody != c.body || a.MaxBodyBytes != c.bytes || a.Timeout != c.timeout {
			t.Errorf("%s: body %v %d timeout %s, want %v %d %s", c.name, a.WithBody, a.MaxBodyBytes, a.Timeout, c.body, c.bytes, c.timeout)
		}
		if err := a.Validate("r"); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// TestCheckTimeoutHostileValues: check_timeout must be a whole number of milliseconds
// within 0-5m (Envoy holds the request and its body that long); the IR refuses the same.
func TestCheckTimeoutHostileValues(t *testing.T) {
	for _, d := range []time.Duration{-time.Second, 5*time.Minute + time.Millisecond, 1500 * time.Microsecond, time.Duration(1<<63 - 1)} {
		errs := (&model.WAFSettings{CheckTimeout: model.Duration(d)}).Validate()
		if !strings.Contains(errs.Error(), "check_timeout") {
			t.Errorf("check_timeout %s: accepted (%v)", d, errs)
		}
		a := ir.Authz{Enabled: true, ContextExtensions: map[string]string{ir.ExtAuthzRouteIDKey: "r"}, Timeout: d}
		if a.Validate("r") == nil {
			t.Errorf("IR timeout %s: accepted", d)
		}
	}
	for _, d := range []time.Duration{0, time.Millisecond, 5 * time.Minute} {
		if errs := (&model.WAFSettings{CheckTimeout: model.Duration(d)}).Validate(); len(errs) > 0 {
			t.Errorf("check_timeout %s: %v", d, errs)
		}
	}
	bad := []ir.Authz{
		{Enabled: true, ContextExtensions: map[string]string{ir.ExtAuthzRouteIDKey: "r"}, WithBody: true},           // no size
		{Enabled: false, WithBody: true, MaxBodyBytes: 1},                                                           // body without a check
		{Enabled: false, Timeout: time.Second},                                                                      // timeout without a check
		{Enabled: true, ContextExtensions: map[string]string{ir.ExtAuthzRouteIDKey: "other"}, Timeout: time.Second}, // wrong route
	}
	for i, a := range bad {
		if a.Validate("r") == nil {
			t.Errorf("bad[%d] %+v: accepted", i, a)
		}
	}
}
