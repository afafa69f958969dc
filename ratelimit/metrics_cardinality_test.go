package ratelimit

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
)

// series counts the series a registry exposes.
func series(t *testing.T, reg *prometheus.Registry) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		n += len(mf.GetMetric())
	}
	return n
}

// TestMetricSeriesBoundedByConfiguration: metric labels come from the configuration, never
// from the request. Thousands of calls with random domains, random descriptor values on a
// detailed_metric limit, random per-request limit overrides (on configured and unconfigured
// descriptors) add no series beyond those a fixed
// set of calls creates (3,000 such calls added 21,000-24,000 /metrics lines).
func TestMetricSeriesBoundedByConfiguration(t *testing.T) {
	reg := prometheus.NewRegistry()
	svc, err := New(Options{Store: NewMemoryStore(), Clock: newFakeClock(base), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	rules, err := BuildRulesFromDomains(1, []ir.RateLimitDomain{{Name: "test", Descriptors: []ir.RateLimitDescriptor{
		{Key: "user", DetailedMetric: true, Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 5, Period: time.Minute}}},
		{Key: "path", Value: "api*", ValueToMetric: true, Limits: []ir.RateLimitRule{{Algorithm: ir.SlidingWindow, Requests: 5, Period: time.Minute}}},
		{Key: "ip", Limits: []ir.RateLimitRule{{Algorithm: ir.TokenBucket, Requests: 5, Period: time.Minute}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRules(rules)
	rng := rand.New(rand.NewSource(5))
	word := func() string { return fmt.Sprintf("w%d", rng.Int63()) }
	call := func() {
		q := &rlsv3.RateLimitRequest{Domain: "test"}
		d := &rlcommon.RateLimitDescriptor{}
		switch rng.Intn(6) {
		case 0: // an unknown domain with an override
			q.Domain = word()
			d.Entries = []*rlcommon.RateLimitDescriptor_Entry{{Key: word(), Value: word()}}
			d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: uint32(rng.Intn(100)), Unit: 2}
		case 1: // detailed_metric with a random value
			d.Entries = []*rlcommon.RateLimitDescriptor_Entry{{Key: "user", Value: word()}}
		case 2: // value_to_metric under a wildcard
			d.Entries = []*rlcommon.RateLimitDescriptor_Entry{{Key: "path", Value: "api" + word()}}
		case 3: // an override on a configured descriptor, random numbers
			d.Entries = []*rlcommon.RateLimitDescriptor_Entry{{Key: "ip", Value: word()}}
			d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: uint32(rng.Intn(1000)), Unit: typev3.RateLimitUnit(1 + rng.Intn(4))}
			if rng.Intn(2) == 0 {
				d.Limit.UnitMultiplier = wrapperspb.UInt32(uint32(rng.Intn(50)))
			}
		case 4: // an override on an unconfigured key of a configured domain
			d.Entries = []*rlcommon.RateLimitDescriptor_Entry{{Key: word(), Value: word()}, {Key: word(), Value: word()}}
			d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: 7, Unit: 2}
		default: // an unknown domain without an override
			q.Domain = word()
			d.Entries = []*rlcommon.RateLimitDescriptor_Entry{{Key: "ip", Value: word()}}
		}
		q.Descriptors = []*rlcommon.RateLimitDescriptor{d}
		_, _ = svc.ShouldRateLimit(context.Background(), q)
	}
	for i := 0; i < 300; i++ {
		call()
	}
	warm := series(t, reg)
	for i := 0; i < 3000; i++ {
		call()
	}
	if n := series(t, reg); n > warm {
		t.Fatalf("3,000 random calls added %d series (from %d to %d)", n-warm, warm, n)
	}
}
