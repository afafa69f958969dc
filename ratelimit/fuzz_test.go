package ratelimit

import (
	"context"
	"math"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/api-gateway/api-gateway/ir"
)

// fuzzDomains is the configuration the fuzz target runs against: every algorithm, nested and
// wildcard descriptors, detailed metrics, shadow mode, unlimited, several rules per limit.
func fuzzDomains() []ir.RateLimitDomain {
	return []ir.RateLimitDomain{{Name: "test", Descriptors: []ir.RateLimitDescriptor{
		{Key: "f", Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 5, Period: time.Second}}},
		{Key: "s", Limits: []ir.RateLimitRule{{Algorithm: ir.SlidingWindow, Requests: 7, Period: 2 * time.Second}}},
		{Key: "big", Limits: []ir.RateLimitRule{{Algorithm: ir.SlidingWindow, Requests: 1_000_000, Period: time.Hour}}},
		{Key: "t", Limits: []ir.RateLimitRule{{Algorithm: ir.TokenBucket, Requests: 10, Period: time.Second, Burst: 4}}},
		{Key: "l", Limits: []ir.RateLimitRule{{Algorithm: ir.LeakyBucket, Requests: 10, Period: time.Second, Burst: 3}}},
		{Key: "g", Name: "grp", Limits: []ir.RateLimitRule{
			{Kind: "limit", Algorithm: ir.FixedWindow, Requests: 20, Period: time.Minute},
			{Kind: "spike_arrest", Algorithm: ir.LeakyBucket, Requests: 5, Period: time.Second, Burst: 2},
			{Kind: "limit", Algorithm: ir.SlidingWindow, Requests: 8, Period: 3 * time.Second},
		}},
		{Key: "w", Value: "a*", DetailedMetric: true, ShareThreshold: true, Limits: []ir.RateLimitRule{{Algorithm: ir.TokenBucket, Requests: 3, Period: time.Second}}},
		{Key: "sh", ShadowMode: true, Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 2, Period: time.Second}}},
		{Key: "u", Unlimited: true},
		{Key: "d", Name: "dup", Limits: []ir.RateLimitRule{ // two rules on one counter each
			{Algorithm: ir.FixedWindow, Requests: 6, Period: time.Second}, {Algorithm: ir.FixedWindow, Requests: 9, Period: time.Second},
			{Algorithm: ir.SlidingWindow, Requests: 6, Period: time.Second}, {Algorithm: ir.SlidingWindow, Requests: 9, Period: time.Second},
		}},
		{Key: "z", Limits: []ir.RateLimitRule{{Algorithm: ir.FixedWindow, Requests: 0, Period: time.Second}}},
		{Key: "n", Descriptors: []ir.RateLimitDescriptor{
			{Key: "m", Limits: []ir.RateLimitRule{{Algorithm: ir.SlidingWindow, Requests: 3, Period: time.Second}}},
		}},
	}}}
}

// fuzzKeys are the descriptor keys a fuzz input picks from (configured ones and others).
var fuzzKeys = []string{"f", "s", "big", "t", "l", "g", "w", "sh", "u", "z", "n", "other", "d"}

// fuzzRequest turns fuzz input into a request: descriptors picked by the bytes of shape, each
// with the value, a cost taken from hits (0, small, at the caps, huge, 2^64-1), an optional
// limit override and negative hits.
func fuzzRequest(domain string, shape []byte, value string, hits uint64, reqHits uint32, ovReq uint32, ovUnit uint8, ovMult uint32) *rlsv3.RateLimitRequest {
	q := &rlsv3.RateLimitRequest{Domain: domain, HitsAddend: reqHits}
	for i, b := range shape {
		if i >= 80 { // past MaxDescriptors: the cap is part of what is fuzzed
			break
		}
		d := &rlcommon.RateLimitDescriptor{}
		key := fuzzKeys[int(b)%len(fuzzKeys)]
		d.Entries = []*rlcommon.RateLimitDescriptor_Entry{{Key: key, Value: value}}
		if key == "n" {
			d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: "m", Value: value})
		}
		if b&0x80 != 0 {
			costs := []uint64{hits, 0, 1, hits % 10, math.MaxUint32, math.MaxUint32 + 1, maxRequests + 1, math.MaxUint64, hits >> 32}
			d.HitsAddend = wrapperspb.UInt64(costs[int(b>>4)%len(costs)])
		}
		if b&0x40 != 0 && ovUnit != 0 {
			d.Limit = &rlcommon.RateLimitDescriptor_RateLimitOverride{RequestsPerUnit: ovReq % 50, Unit: typev3.RateLimitUnit(ovUnit % 8)}
			if ovMult != 0 {
				d.Limit.UnitMultiplier = wrapperspb.UInt32(ovMult)
			}
		}
		if b&0x20 != 0 && b&0x10 != 0 {
			d.IsNegativeHits = true
		}
		q.Descriptors = append(q.Descriptors, d)
	}
	return q
}

// FuzzShouldRateLimit sends random requests to a service on the memory store and one on a
// real Redis (started once), at the same instants, and requires the same answer from both
// (code, every status and header, or the same gRPC error), no panic, and each call within a
// bound that does not depend on the request. The seed corpus runs in plain go test.
func FuzzShouldRateLimit(f *testing.F) {
	f.Add("test", []byte{0}, "v", uint64(1), uint32(0), uint32(0), uint8(0), uint32(0), uint32(0))
	f.Add("test", []byte{0x80, 0x81, 0x82, 0x83, 0x84}, "v", uint64(math.MaxUint64), uint32(0), uint32(0), uint8(0), uint32(0), uint32(1000))
	f.Add("test", []byte{0x80 | 2, 0x90 | 2}, "x", uint64(1_000_000), uint32(0), uint32(0), uint8(0), uint32(0), uint32(0))
	f.Add("test", []byte{1, 3, 4, 5, 6, 7, 8, 9, 10, 11}, "abc", uint64(3), uint32(2), uint32(0), uint8(0), uint32(0), uint32(500_000))
	f.Add("test", []byte{0x40, 0x41, 0x4b}, "v", uint64(2), uint32(0), uint32(7), uint8(2), uint32(math.MaxUint32), uint32(0))
	f.Add("test", []byte{0x40, 0x4b}, "v", uint64(2), uint32(0), uint32(7), uint8(6), uint32(40), uint32(0))
	f.Add("nope", []byte{0x40, 0x4b}, "v", uint64(0), uint32(0), uint32(3), uint8(1), uint32(0), uint32(0))
	f.Add("test", []byte{0xb0, 0xc0, 0xd3, 0xe4, 0xf5, 0xa6}, "v", uint64(math.MaxUint32), uint32(math.MaxUint32), uint32(0), uint8(0), uint32(0), uint32(0))
	f.Add("test", make([]byte, 70), "v", uint64(1), uint32(0), uint32(0), uint8(0), uint32(0), uint32(0))
	f.Add("test", []byte{0x30, 0x31, 0x35}, "v", uint64(9), uint32(0), uint32(0), uint8(0), uint32(0), uint32(1))
	f.Add("test", []byte{12, 12, 0x8c, 12, 12}, "v", uint64(2), uint32(0), uint32(0), uint8(0), uint32(0), uint32(100_000))
	mem := newTestService(f, NewMemoryStore(), nil, fuzzDomains()...)
	red := newTestService(f, newTestStore(f, "redis"), nil, fuzzDomains()...)
	clock := newFakeClock(base)
	mem.clock, red.clock = clock, clock
	f.Fuzz(func(t *testing.T, domain string, shape []byte, value string, hits uint64, reqHits uint32, ovReq uint32, ovUnit uint8, ovMult uint32, advance uint32) {
		if len(shape) == 0 {
			return
		}
		clock.Set(clock.Now().Add(time.Duration(advance%10_000_000) * time.Microsecond))
		q := fuzzRequest(domain, shape, value, hits, reqHits, ovReq, ovUnit, ovMult)
		ask := func(s *Service) (*rlsv3.RateLimitResponse, error) {
			t0 := time.Now()
			resp, err := s.ShouldRateLimit(context.Background(), q)
			if d := time.Since(t0); d > 2*time.Second {
				t.Fatalf("%s store: one call took %v", s.store.Name(), d)
			}
			return resp, err
		}
		a, aerr := ask(mem)
		b, berr := ask(red)
		if status.Code(aerr) != status.Code(berr) {
			t.Fatalf("errors differ: memory %v, redis %v", aerr, berr)
		}
		if !proto.Equal(a, b) {
			t.Fatalf("answers differ at %v for %v:\nmemory %v\nredis  %v", clock.Now().Sub(base), q, a, b)
		}
	})
}
