package server

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/xds/server/xdstest"
)

func heapInUse() float64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return float64(m.HeapInuse) / (1 << 20)
}

// TestMemoryAt1kRoutes100Clients measures the Go heap the xDS server holds with 1,001 routes
// (the published snapshots of three groups, the endpoint cache and the memos) and what 100
// connected grpc-go xDS clients add (server streams and watches plus the clients' own state:
// they run in this process). It guards the 100 MB RSS budget for the whole binary:
// xDS must stay a small part of it.
func TestMemoryAt1kRoutes100Clients(t *testing.T) {
	h := start(t)
	a := xdstest.StartBackend(t, "a")
	snap := snapshot(1)
	for i := 0; i < 1000; i++ {
		r := route(fmt.Sprintf("bulk-%04d", i), fmt.Sprintf("h%d.bulk.test", i%50), a)
		r.Conditions[0].PathPattern = fmt.Sprintf("/svc%d/*", i)
		snap.Routes = append(snap.Routes, r)
	}
	snap.Routes = append(snap.Routes, route("prop", "prop.test", a))
	h0 := heapInUse()
	h.apply(t, snap)
	h1 := heapInUse()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 100; i++ {
		cc := xdstest.Dial(t, h.addr, fmt.Sprintf("mem-%03d", i), "prop.test")
		if _, err := xdstest.Call(ctx, cc); err != nil {
			t.Fatal(err)
		}
	}
	h2 := heapInUse()
	// A second revision (one route changed): the memos keep the previous build's resources
	// only until this one is done.
	snap2 := *snap
	snap2.Revision = 2
	snap2.Routes = append([]*model.Route(nil), snap.Routes...)
	r := *snap.Routes[5]
	r.Timeout = model.Duration(7 * time.Second)
	snap2.Routes[5] = &r
	h.apply(t, &snap2)
	h3 := heapInUse()
	t.Logf("heap in use: xDS state at 1,001 routes %.1f MiB; 100 grpc-go clients (server and client side) %.1f MiB; after a second revision %.1f MiB total (%.1f MiB before)",
		h1-h0, h2-h1, h3, h0)
	if h1-h0 > 40 || h3-h0 > 90 {
		t.Fatalf("xDS heap %.1f MiB after the first revision, %.1f MiB in all: over budget", h1-h0, h3-h0)
	}
}
