package deploy_test

import (
	"fmt"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3" // typed_extension_protocol_options
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"
)

// parseBootstrap decodes an Envoy bootstrap (YAML) into Envoy's Bootstrap proto, rejecting
// unknown fields, and runs the proto's validation rules.
func parseBootstrap(t *testing.T, name string, data []byte) *bootstrapv3.Bootstrap {
	t.Helper()
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatalf("%s: not YAML: %v", name, err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("%s: not an Envoy bootstrap: %v", name, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s: invalid Envoy bootstrap: %v", name, err)
	}
	if b.GetDynamicResources().GetAdsConfig() == nil {
		t.Fatalf("%s: no ADS config: the control plane would never configure this Envoy", name)
	}
	return b
}

// xdsHosts returns host:port of every endpoint of the static clusters the ADS config uses.
func xdsHosts(t *testing.T, b *bootstrapv3.Bootstrap) []string {
	t.Helper()
	used := map[string]bool{}
	for _, gs := range b.GetDynamicResources().GetAdsConfig().GetGrpcServices() {
		used[gs.GetEnvoyGrpc().GetClusterName()] = true
	}
	var out []string
	for _, c := range b.GetStaticResources().GetClusters() {
		if !used[c.GetName()] {
			continue
		}
		delete(used, c.GetName())
		for _, le := range c.GetLoadAssignment().GetEndpoints() {
			for _, ep := range le.GetLbEndpoints() {
				sa := ep.GetEndpoint().GetAddress().GetSocketAddress()
				out = append(out, fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()))
			}
		}
	}
	for name := range used {
		t.Errorf("ADS uses cluster %q, which the bootstrap does not define", name)
	}
	if len(out) == 0 {
		t.Error("the ADS cluster has no endpoint")
	}
	return out
}
