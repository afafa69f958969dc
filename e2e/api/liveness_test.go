package api_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

type serviceList struct {
	Items []struct {
		ID            string    `json:"id"`
		Status        string    `json:"status"`
		LastHeartbeat time.Time `json:"last_heartbeat"`
	} `json:"items"`
	Revision uint64 `json:"revision"`
}

// counter sums one unlabelled counter over replicas.
func counter(t *testing.T, name string, reps ...*testutil.Gateway) float64 {
	t.Helper()
	var n float64
	for _, g := range reps {
		v, err := strconv.ParseFloat(metric(t, g, name), 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		n += v
	}
	return n
}

// Two replicas of the binary on one redis-server: heartbeats sent to either are no
// revision and both show them; an instance that stops is expired by the lease holder; an
// expired WAF ban is deleted once, an operator's expired rule never.
func TestHeartbeatsAndBansAcrossReplicas(t *testing.T) {
	rs := testutil.StartRedis(t)
	var reps []*testutil.Gateway
	for i := 0; i < 2; i++ {
		reps = append(reps, testutil.StartGateway(t, testutil.GatewayOptions{Env: []string{"REDIS_URL=redis://" + rs.Addr, "LOG_LEVEL=info"}}))
	}
	a, b := reps[0], reps[1]
	if code, raw := a.Do("POST", "/api/v1/management/services", `{"id":"users-1","name":"users","host":"10.0.0.5","port":8080,"ttl":"2s"}`, nil); code != 201 {
		t.Fatalf("register: %d %s", code, raw)
	}
	var before serviceList
	if code, raw := b.Do("GET", "/api/v1/management/services", nil, &before); code != 200 || len(before.Items) != 1 {
		t.Fatalf("list: %d %s", code, raw)
	}
	start := time.Now()
	for i := 0; i < 200; i++ {
		g := reps[i%2]
		if code, raw := g.Do("PUT", "/api/v1/management/services/users-1/heartbeat", nil, nil); code != 200 {
			t.Fatalf("heartbeat %d: %d %s", i, code, raw)
		}
		if i%40 == 0 {
			time.Sleep(500 * time.Millisecond) // outlive the first TTL on heartbeats alone
		}
	}
	var after serviceList
	b.Do("GET", "/api/v1/management/services", nil, &after)
	if after.Revision != before.Revision {
		t.Fatalf("200 heartbeats moved the revision %d -> %d", before.Revision, after.Revision)
	}
	// The heartbeats outlived the registration's TTL: the instance stayed on liveness alone.
	if el := time.Since(start); el <= 2*time.Second {
		t.Fatalf("heartbeats took %s, not past the 2 s TTL", el)
	}
	if it := after.Items[0]; it.Status != "" || !it.LastHeartbeat.After(before.Items[0].LastHeartbeat.Add(2*time.Second)) {
		t.Fatalf("after heartbeats: %+v (registered %v)", it, before.Items[0].LastHeartbeat)
	}
	// Silence: the lease holder marks it expired.
	waitFor(t, func() bool {
		var l serviceList
		a.Do("GET", "/api/v1/management/services", nil, &l)
		return len(l.Items) == 1 && l.Items[0].Status == "expired"
	})
	if n := counter(t, "api_gateway_discovery_expired_total", a, b); n != 1 {
		t.Fatalf("expired %v times", n)
	}
	// Back: a heartbeat of an expired instance is a revision, and it serves again.
	if code, raw := b.Do("PUT", "/api/v1/management/services/users-1/heartbeat", nil, nil); code != 200 {
		t.Fatalf("heartbeat after expiry: %d %s", code, raw)
	}
	var back serviceList
	a.Do("GET", "/api/v1/management/services", nil, &back)
	if back.Items[0].Status != "" || back.Revision <= after.Revision {
		t.Fatalf("after coming back: %+v", back)
	}

	// A ban as the WAF writes it (extauthz.WAFDenyRule), expired an hour ago, and an
	// operator's rule expired as long.
	sum := sha256.Sum256([]byte("203.0.113.5"))
	banID := "waf-" + hex.EncodeToString(sum[:8])
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, body := range []string{
		fmt.Sprintf(`{"id":%q,"action":"deny","cidrs":["203.0.113.5"],"expires_at":%q,"source":"waf"}`, banID, past),
		fmt.Sprintf(`{"id":"operator-block","action":"deny","cidrs":["198.51.100.0/24"],"expires_at":%q}`, past),
	} {
		if code, raw := a.Do("POST", "/api/v1/management/ip-rules", body, nil); code != 201 {
			t.Fatalf("ip-rule: %d %s", code, raw)
		}
	}
	waitFor(t, func() bool {
		code, _ := b.Do("GET", "/api/v1/management/ip-rules/"+banID, nil, nil)
		return code == 404
	})
	if code, _ := b.Do("GET", "/api/v1/management/ip-rules/operator-block", nil, nil); code != 200 {
		t.Fatalf("an operator's expired rule: %d", code)
	}
	waitFor(t, func() bool {
		return counter(t, "api_gateway_waf_bans_deleted_total", a, b) == 1
	})
}
