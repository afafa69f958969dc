package envoy_test

import (
	"testing"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/api-gateway/api-gateway/envoy"
)

// apiListenerFilters are the HTTP filter names of every API listener of a gRPC-flavor build.
func apiListenerFilters(t *testing.T, res *envoy.Resources) [][]string {
	t.Helper()
	var out [][]string
	for _, l := range res.Listeners {
		var h hcmv3.HttpConnectionManager
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(&h); err != nil {
			t.Fatalf("listener %s: %v", l.GetName(), err)
		}
		var names []string
		for _, f := range h.GetHttpFilters() {
			names = append(names, f.GetName())
		}
		out = append(out, names)
	}
	if len(out) == 0 {
		t.Fatal("no API listener")
	}
	return out
}

// The proxyless clients' listener carries the fault filter (right before the router) only
// while some route has a fault: through the same memo, deleting the last faulted route takes
// it out again and adding one back puts it in.
func TestGRPCFaultFilterFollowsTheFaultedRoutes(t *testing.T) {
	const plain = `
  - id: plain
    require_auth: false
    hosts: [svc.example.com]
    conditions: [{path_prefix: "/a."}]
    targets: [{host: 10.0.0.1, port: 8080}]
`
	const faulted = plain + `
  - id: faulted
    require_auth: false
    hosts: [svc.example.com]
    conditions: [{path_prefix: "/b."}]
    targets: [{host: 10.0.0.2, port: 8080}]
    fault: {delay: {fixed: 2s, percent: 0}}
`
	memo := envoy.NewMemo()
	for i, step := range []struct {
		routes string
		fault  bool
	}{{faulted, true}, {plain, false}, {faulted, true}, {plain, false}} {
		res, err := envoy.Build(translateYAML(t, step.routes), envoy.Options{Flavor: envoy.FlavorGRPC, Memo: memo})
		if err != nil {
			t.Fatal(err)
		}
		for _, names := range apiListenerFilters(t, res) {
			has := len(names) >= 2 && names[len(names)-2] == envoy.FaultFilter && names[len(names)-1] == "envoy.filters.http.router"
			others := 0
			for _, n := range names {
				if n == envoy.FaultFilter {
					others++
				}
			}
			if has != step.fault || (step.fault && others != 1) || (!step.fault && others != 0) {
				t.Errorf("step %d: filters %v, want the fault filter before the router: %v", i, names, step.fault)
			}
		}
	}
}

// A delay alone or an abort alone is an HTTPFault with only that part, each with its
// percentage set (grpc-js NACKs a delay or abort without one; Envoy reads an unset one as 0 %):
// percent 0 is numerator 0, an unset percent all requests, both per million.
func TestRouteHTTPFaultParts(t *testing.T) {
	cfg := translateYAML(t, `
  - id: delay-none
    require_auth: false
    hosts: [svc.example.com]
    conditions: [{path_prefix: "/d."}]
    targets: [{host: 10.0.0.1, port: 8080}]
    fault: {delay: {fixed: 250ms, percent: 0}}
  - id: abort-all
    require_auth: false
    hosts: [svc.example.com]
    conditions: [{path_prefix: "/a."}]
    targets: [{host: 10.0.0.1, port: 8080}]
    fault: {abort: {grpc_status: 14}}
`)
	for _, f := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		res, err := envoy.Build(cfg, envoy.Options{Flavor: f})
		if err != nil {
			t.Fatal(err)
		}
		rs := builtRoutes(t, res)
		get := func(name string) *faultv3.HTTPFault {
			var h faultv3.HTTPFault
			a := rs[name].GetTypedPerFilterConfig()[envoy.FaultFilter]
			if a == nil {
				t.Fatalf("flavor %v: route %s has no fault config", f, name)
			}
			if err := a.UnmarshalTo(&h); err != nil {
				t.Fatal(err)
			}
			return &h
		}
		d := get("delay-none")
		if d.GetAbort() != nil || d.GetDelay().GetFixedDelay().AsDuration().Milliseconds() != 250 ||
			d.GetDelay().GetPercentage() == nil || d.GetDelay().GetPercentage().GetNumerator() != 0 ||
			d.GetDelay().GetPercentage().GetDenominator() != typev3.FractionalPercent_MILLION {
			t.Errorf("flavor %v: delay-only fault: %v", f, d)
		}
		a := get("abort-all")
		if a.GetDelay() != nil || a.GetAbort().GetGrpcStatus() != 14 || a.GetAbort().GetPercentage().GetNumerator() != 1_000_000 ||
			a.GetAbort().GetPercentage().GetDenominator() != typev3.FractionalPercent_MILLION {
			t.Errorf("flavor %v: abort-only fault: %v", f, a)
		}
	}
}
