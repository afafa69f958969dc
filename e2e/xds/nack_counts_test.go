package xds_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

const cdsTypeURL = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

// TestProxylessNACKCounts: a real NACK from each client is counted once on /xds/nodes, as the
// client sent it, and marks the route whose cluster it rejected NACKED until a later version
// is ACKed. The gateway sends nothing a client rejects, so the ADS proxy corrupts one cluster
// response on its way; the client's rejection, and whatever it repeats of it (grpc-js sends
// the NACK's error_detail again with the same nonce on its next cluster request), are the
// client's own.
func TestProxylessNACKCounts(t *testing.T) {
	e := newEnv(t, testutil.GatewayOptions{})
	g := e.g
	a, b, o := xdstest.StartBackend(t, "a"), xdstest.StartBackend(t, "b"), xdstest.StartBackend(t, "o")

	e.runScenarios(t, []scenario{
		{"a rejected cluster response is counted once and clears", func(t *testing.T, e *env, c xdsClient) {
			id, host := "nacked-"+c.Short(), "nacked-"+c.Short()+".test"
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute(id, host, grpcTarget(a, 1)), 201)
			e.waitBackend(t, c, rpcs{Target: host}, "a", 10*time.Second)
			// A route to a target no other route has, whose channel opens only after the NACK:
			// its cluster is in the snapshot the client will reject, so subscribing to it
			// later is a cluster request before any new cluster response (grpc-js repeats the
			// NACKed nonce and its error_detail in it).
			other := "nacked-other-" + c.Short()
			mustDo(t, g, "POST", "/api/v1/management/routes", publicRoute(other, other+".test", grpcTarget(o, 1)), 201)
			eventually(t, 10*time.Second, func() string {
				if msg := e.behind(t, "grpc"); !strings.HasPrefix(msg, "every node") {
					return msg
				}
				return ""
			})
			e.checkCountsAgree(t, c)
			nodes := c.Nodes()
			before := map[string]int{}
			for _, n := range nodes {
				before[n] = e.proxy.Counts(n).NACKs["cds"]
				e.proxy.CorruptNext(n, cdsTypeURL)
			}
			// Another load-balancing policy changes the route's cluster (a new target would change
			// only its endpoints): a cluster response the client must answer.
			hashed := publicRoute(id, host, grpcTarget(a, 1))
			hashed["load_balance"] = "ip_hash"
			mustDo(t, g, "PUT", "/api/v1/management/routes/"+id, hashed, 200)
			eventually(t, 10*time.Second, func() string {
				var waiting []string
				for _, n := range nodes {
					if e.proxy.Counts(n).NACKs["cds"] == before[n] {
						waiting = append(waiting, n)
					}
				}
				if len(waiting) > 0 {
					var why []string
					for _, n := range waiting {
						why = append(why, fmt.Sprintf("%s (corruption pending %v, counts %+v)", n, e.proxy.Corrupting(n, cdsTypeURL), e.proxy.Counts(n)))
					}
					return fmt.Sprintf("no NACK of the corrupted cluster response from %v", why)
				}
				return ""
			})
			for _, n := range nodes {
				if got := e.proxy.Counts(n).NACKs["cds"] - before[n]; got != 1 {
					t.Fatalf("node %s: %d cluster responses rejected, one was corrupted: %q", n, got, e.proxy.Counts(n).NACKErrors)
				}
			}
			// The rejected cluster is the route's own: NACKED, naming a node that rejected it.
			eventually(t, 10*time.Second, func() string {
				if st := e.routeStatus(t, id); st.XDS["grpc"].State != "NACKED" || st.XDS["grpc"].Error == "" {
					return fmt.Sprintf("route %s whose cluster was rejected: status %+v", id, st)
				}
				return ""
			})
			// The client repeats what it sent: the other route's channel subscribes to its
			// cluster, which the control plane must still answer.
			e.waitBackend(t, c, rpcs{Target: other + ".test"}, "o", 10*time.Second)
			e.checkCountsAgree(t, c)
			for _, n := range nodes {
				if e.proxy.Corrupting(n, cdsTypeURL) {
					t.Fatalf("node %s: the corruption asked for never happened", n)
				}
				gw := e.node(t, n)
				if gw == nil || gw.NACKs["cds"] != e.proxy.Counts(n).NACKs["cds"] || gw.LastNACK == nil || gw.LastNACK.Type != "cds" {
					t.Fatalf("node %s on /xds/nodes: %+v, the client sent %d cluster NACKs", n, gw, e.proxy.Counts(n).NACKs["cds"])
				}
			}
			// A later version of the route's cluster, forwarded unchanged, is ACKed: the route
			// is ACKED again and answers from its new target.
			mustDo(t, g, "PUT", "/api/v1/management/routes/"+id, publicRoute(id, host, grpcTarget(b, 1)), 200)
			e.waitBackend(t, c, rpcs{Target: host}, "b", 10*time.Second)
			eventually(t, 10*time.Second, func() string {
				if st := e.routeStatus(t, id); st.XDS["grpc"].State != "ACKED" {
					return fmt.Sprintf("route %s after its cluster was ACKed: status %+v; %s", id, st, e.behind(t, "grpc"))
				}
				return ""
			})
			e.checkCountsAgree(t, c)
			for _, n := range nodes {
				if cs := e.proxy.Counts(n); cs.NACKs["cds"]-before[n] != 1 || !strings.Contains(strings.Join(cs.NACKErrors, " "), "type") {
					t.Fatalf("node %s: NACKs %v %q, want the one rejection of the corrupted response", n, cs.NACKs, cs.NACKErrors)
				}
			}
		}},
	})
}
