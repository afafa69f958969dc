package ratelimit

import (
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/ir"
)

// Descriptors are told apart by key and value: key "remote_address" value "x" and key
// "remote" value "address_x" (one name when joined with '_') are two nodes with their own
// limits, and a wildcard of key "a" does not match key "a_b".
func TestDescriptorKeysWithUnderscoresDoNotCollide(t *testing.T) {
	lim := func(name string, n uint64) ir.RateLimitDescriptor {
		return ir.RateLimitDescriptor{Name: name, Limits: []ir.RateLimitRule{{Kind: "limit", Algorithm: ir.FixedWindow, Requests: n, Period: time.Minute}}}
	}
	a, b, w := lim("a", 1), lim("b", 2), lim("w", 3)
	a.Key, a.Value = "remote_address", "x"
	b.Key, b.Value = "remote", "address_x"
	w.Key, w.Value = "a", "b_*"
	rules, err := BuildRulesFromDomains(1, []ir.RateLimitDomain{{Name: "d", Descriptors: []ir.RateLimitDescriptor{a, b, w}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, value, want string
	}{{"remote_address", "x", "a"}, {"remote", "address_x", "b"}, {"a", "b_c", "w"}, {"a_b", "c", ""}} {
		got, _ := rules.lookup("d", []entryView{{tc.key, tc.value}})
		name := ""
		if got != nil {
			name = got.name
		}
		if name != tc.want {
			t.Errorf("%s=%s: limit %q, want %q", tc.key, tc.value, name, tc.want)
		}
	}
}
