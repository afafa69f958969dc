package waf

import (
	"context"
	"testing"

	"github.com/api-gateway/api-gateway/model"
)

// TestInspectDeclaredBodyNotSent: a request that declares a body (Content-Length) whose
// CheckRequest carries less of it and no x-envoy-auth-partial-body was not buffered for
// the check at all (an Envoy before 1.29 ignores the per-route with_request_body; a route
// update not yet applied): the WAF never passes a body it has not seen. Block mode fails
// closed; detect mode lets it through; a whole body, or none declared, is inspected.
func TestInspectDeclaredBodyNotSent(t *testing.T) {
	reg := NewRegistry(RegistryOptions{Logger: quiet})
	w := mustGet(t, reg, &model.WAFSettings{})
	r := sqliForm(1 << 10)
	noBody := r.check()
	noBody.Attributes.Request.Http.RawBody = nil
	if v := w.Inspect(context.Background(), noBody); v.Allowed || v.Err == nil || v.Status != 500 {
		t.Errorf("declared body not sent: want a failure verdict, got %+v", v)
	}
	short := r.check()
	short.Attributes.Request.Http.RawBody = short.Attributes.Request.Http.RawBody[:100]
	if v := w.Inspect(context.Background(), short); v.Allowed || v.Err == nil {
		t.Errorf("declared body sent in part without the partial-body header: want a failure verdict, got %+v", v)
	}
	whole := r.check()
	whole.Attributes.Request.Http.Headers[partialBodyHeader] = "false"
	if v := w.Inspect(context.Background(), whole); v.Allowed || v.Status != StatusForbidden || !has942(v.RuleIDs) {
		t.Errorf("whole body: want the SQLi blocked, got %+v", v)
	}
	if v := w.Inspect(context.Background(), req{uri: "/forms/view?x=1"}.check()); !v.Allowed {
		t.Errorf("no body declared: %+v", v)
	}
	d := mustGet(t, reg, &model.WAFSettings{Mode: model.WAFModeDetect})
	if v := d.Inspect(context.Background(), noBody); !v.Allowed {
		t.Errorf("detect mode: want allowed, got %+v", v)
	}
}
