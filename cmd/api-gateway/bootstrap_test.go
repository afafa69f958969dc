package main

import (
	"bytes"
	"strings"
	"testing"
)

// envoy-bootstrap run in the gateway's environment points Envoy where that gateway's gRPC
// port is reachable: XDS_ADVERTISE_ADDRESS when set, else the address GRPC_BIND_ADDRESS (or
// BIND_ADDRESS) and GRPC_PORT make, as for the clusters the gateway serves. A fixed
// 127.0.0.1:18000 pointed at nothing when the port listens on one private address or
// another port. --xds-address still wins.
func TestEnvoyBootstrapDefaultAddressFollowsTheGRPCPort(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{env: map[string]string{}, want: `"address":"127.0.0.1","port_value":18000`},
		{env: map[string]string{"GRPC_PORT": "19000"}, want: `"address":"127.0.0.1","port_value":19000`},
		{env: map[string]string{"GRPC_BIND_ADDRESS": "10.0.0.5"}, want: `"address":"10.0.0.5","port_value":18000`},
		{env: map[string]string{"BIND_ADDRESS": "10.0.0.6", "GRPC_PORT": "19000"}, want: `"address":"10.0.0.6","port_value":19000`},
		{env: map[string]string{"XDS_ADVERTISE_ADDRESS": "gw.internal:18001", "GRPC_BIND_ADDRESS": "10.0.0.5"}, want: `"address":"gw.internal","port_value":18001`},
		{env: map[string]string{"GRPC_BIND_ADDRESS": "10.0.0.5"}, args: []string{"--xds-address", "cp:1234"}, want: `"address":"cp","port_value":1234`},
	} {
		for _, k := range []string{"GRPC_PORT", "GRPC_BIND_ADDRESS", "BIND_ADDRESS", "XDS_ADVERTISE_ADDRESS"} {
			t.Setenv(k, tc.env[k])
		}
		var out, errOut bytes.Buffer
		if rc := runEnvoyBootstrap(append([]string{"--format", "json"}, tc.args...), &out, &errOut); rc != 0 {
			t.Fatalf("%v: exit %d: %s", tc.env, rc, errOut.String())
		}
		if !strings.Contains(strings.Join(strings.Fields(out.String()), ""), tc.want) {
			t.Errorf("%v %v: bootstrap lacks %s:\n%s", tc.env, tc.args, tc.want, out.String())
		}
	}
}
