package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/api-gateway/api-gateway/model"
)

// Through the API: a route a proxyless gRPC client cannot apply (a method condition; a
// credential required) is written like any other (201) and served to Envoy, and its status
// says OMITTED for the gRPC group, with the reason, while no gRPC client is connected;
// translation stays "ok".
func TestRouteOmittedFromProxylessClientsThroughTheAPI(t *testing.T) {
	g := startInProcessGateway(t)
	for _, c := range []struct{ body, id, why string }{
		{`{"id": "posts", "hosts": ["om.test"], "require_auth": false,
		   "conditions": [{"path_pattern": "/pkg.Svc/*", "method": "POST"}],
		   "targets": [{"host": "10.0.40.1", "port": 8080, "protocol": "grpc"}]}`,
			"posts", "conditions[0].method: proxyless gRPC clients do not put :method in their metadata"},
		{`{"id": "private", "hosts": ["om.test"],
		   "conditions": [{"path_pattern": "/pkg.Private/*"}],
		   "targets": [{"host": "10.0.40.2", "port": 8080, "protocol": "grpc"}]}`,
			"private", "require_auth / auth / waf / ip rules / policies: "},
	} {
		if code, body := g.do(t, "POST", "/api/v1/management/routes", []byte(c.body)); code != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", c.id, code, body)
		}
		code, body := g.do(t, "GET", "/api/v1/management/routes/"+c.id, nil)
		var r model.Route
		if code != http.StatusOK || json.Unmarshal(body, &r) != nil || r.Status == nil {
			t.Fatalf("GET %s: %d %s", c.id, code, body)
		}
		x, ok := r.Status.XDS["grpc"]
		if r.Status.Translation != "ok" || !ok || x.State != "OMITTED" || !strings.HasPrefix(x.Error, c.why) {
			t.Fatalf("GET %s: status %s", c.id, body)
		}
	}
}
