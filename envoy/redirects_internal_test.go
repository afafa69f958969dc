package envoy

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/api-gateway/api-gateway/ir"
)

// Envoy refuses a direct response body above max_direct_response_body_size_bytes (4096 when
// unset) and with it the route configuration (config_utility.cc parseDirectResponseBody).
// The model caps bodies already; the rule stands for any builder that emits one.
func TestRuntimeRulesDirectResponseBodySize(t *testing.T) {
	route := func(body *corev3.DataSource) *routev3.Route {
		return &routev3.Route{Name: "r", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: body}}}
	}
	for _, n := range []int{0, 1, ir.MaxDirectResponseBody} {
		s := &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Repeat("a", n)}}
		if err := checkRouteRuntime(route(s), nil); err != nil {
			t.Errorf("a %d-byte body refused: %v", n, err)
		}
	}
	if err := checkRouteRuntime(route(nil), nil); err != nil {
		t.Errorf("no body refused: %v", err)
	}
	for _, s := range []*corev3.DataSource{
		{Specifier: &corev3.DataSource_InlineString{InlineString: strings.Repeat("a", ir.MaxDirectResponseBody+1)}},
		{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: make([]byte, 1<<20)}},
	} {
		err := checkRouteRuntime(route(s), nil)
		if err == nil || !strings.Contains(err.Error(), "maximum is 4096") {
			t.Errorf("a body above 4096 bytes: %v", err)
		}
	}
}
