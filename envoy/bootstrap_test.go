package envoy_test

import (
	"bytes"
	"os"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/envoy"
)

// The checked-in examples and the options that generate them
// (api-gateway envoy-bootstrap --node-id ... --cluster ... --xds-address api-gateway:18000).
var examples = map[string]envoy.BootstrapOptions{
	"bootstrap-edge.yaml":    {NodeID: "envoy-edge-1", Cluster: "edge", XDSAddress: "api-gateway:18000"},
	"bootstrap-sidecar.yaml": {NodeID: "envoy-sidecar-1", Cluster: "sidecar", XDSAddress: "api-gateway:18000"},
}

// TestBootstrapExamples parses the checked-in bootstraps into bootstrap.v3.Bootstrap,
// validates them, and checks they equal freshly generated ones (-update rewrites them).
func TestBootstrapExamples(t *testing.T) {
	for file, o := range examples {
		bs, err := envoy.Bootstrap(o)
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := envoy.ToYAML(bs)
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(file, fresh, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		js, err := yaml.YAMLToJSON(raw)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var parsed bootstrapv3.Bootstrap
		if err := protojson.Unmarshal(js, &parsed); err != nil {
			t.Fatalf("%s does not parse as a Bootstrap: %v", file, err)
		}
		if err := parsed.ValidateAll(); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if parsed.GetNode().GetCluster() != o.Cluster || parsed.GetNode().GetId() != o.NodeID {
			t.Fatalf("%s: node %v", file, parsed.GetNode())
		}
		ads := parsed.GetDynamicResources().GetAdsConfig().GetGrpcServices()
		if len(ads) != 1 || ads[0].GetEnvoyGrpc().GetClusterName() != envoy.XDSCluster ||
			parsed.GetStaticResources().GetClusters()[0].GetName() != envoy.XDSCluster {
			t.Fatalf("%s: ADS must go through %s", file, envoy.XDSCluster)
		}
		if !bytes.Equal(raw, fresh) {
			t.Fatalf("%s differs from the generated bootstrap (go test ./envoy -run TestBootstrapExamples -update)", file)
		}
	}
}

func TestBootstrapRejectsBadOptions(t *testing.T) {
	for _, o := range []envoy.BootstrapOptions{
		{NodeID: "", Cluster: "edge", XDSAddress: "cp:18000"},
		{NodeID: "n", Cluster: "mesh", XDSAddress: "cp:18000"},
		{NodeID: "n", Cluster: "edge", XDSAddress: "cp"},
		{NodeID: "n", Cluster: "edge", XDSAddress: "cp:0"},
	} {
		if _, err := envoy.Bootstrap(o); err == nil {
			t.Errorf("%+v: want an error", o)
		}
	}
}
