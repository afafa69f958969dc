package extauthz

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// tablesModel has n public routes and bans WAF bans (global deny ip-rules, one address each,
// expiring in an hour), the shape a WAF under attack leaves in the store.
func tablesModel(n, bans int, now time.Time) *model.Snapshot {
	snap := &model.Snapshot{Revision: 1, Settings: &model.Settings{ID: model.SettingsID}}
	for i := range n {
		r := route(fmt.Sprintf("route-%05d", i), nil)
		r.Revision = uint64(i + 1)
		snap.Routes = append(snap.Routes, r)
	}
	for i := range bans {
		ban, err := WAFDenyRule(fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now.Add(time.Hour), "anomaly", now)
		if err != nil {
			panic(err)
		}
		ban.Revision = uint64(n + i + 1)
		snap.IPRules = append(snap.IPRules, ban)
	}
	return snap
}

// BenchmarkTables builds the ext_authz tables of 8,000 routes with no ban and with 8,000
// bans, and reports the heap the built tables hold (retained-MiB): global sets must be held
// once, not copied per route, so the two stay within 2x. x_none is the time relative to the
// no-ban build measured in the same run.
func BenchmarkTables(b *testing.B) {
	now := time.Now()
	var base float64
	for _, bans := range []int{0, 8000} {
		snap := tablesModel(8000, bans, now)
		b.Run(fmt.Sprintf("routes=8000/bans=%d", bans), func(b *testing.B) {
			e, err := New(Options{Logger: quietLogger(), Clock: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			var retained uint64
			var ms runtime.MemStats
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				runtime.GC()
				runtime.ReadMemStats(&ms)
				before := ms.HeapAlloc
				res, err := e.build(snap)
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > before {
					retained = ms.HeapAlloc - before
				}
				runtime.KeepAlive(res)
			}
			per := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			if bans == 0 {
				base = per
			} else if base > 0 {
				b.ReportMetric(per/base, "x_none")
			}
			b.ReportMetric(float64(retained)/(1<<20), "retained-MiB")
		})
	}
}
