package envoy_test

import (
	"testing"

	"github.com/api-gateway/api-gateway/envoy"
)

// A direct response body is sent as written: Envoy formats only body_format (config_impl.cc
// builds direct_response_body_formatter_ from it alone), which the gateway never sets, so
// command operators in a body stay text and the runtime-rule check does not read them.
func TestDirectResponseBodyIsNotAFormatString(t *testing.T) {
	const body = "100% done %REQ(:path)% %DOWNSTREAM_REMOTE_ADDRESS% %%"
	cfg := translateYAML(t, `
  - id: lit
    require_auth: false
    conditions: [{path_pattern: "/lit"}]
    direct_response: {status: 200, body: "`+body+`"}
`)
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.RouteErrors) > 0 {
		t.Fatalf("route errors: %v", res.RouteErrors)
	}
	d := builtRoutes(t, res)["lit"].GetDirectResponse()
	if d.GetBody().GetInlineString() != body || d.GetBodyFormat() != nil {
		t.Errorf("direct response: %v", d)
	}
}
