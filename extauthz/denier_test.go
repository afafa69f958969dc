package extauthz

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/translate"
)

// TestStoreIPDenier: the WAF's repeat-offender deny is written to the store as an ip-rule
// and, through the pipeline, denies the client on the next Check; it lapses at ExpiresAt.
func TestStoreIPDenier(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := newHarness(t, Options{})
	pipe := pipeline.New(st, quietLogger(), h.engine)
	// The pipeline's translation decides which rules are in force: on the test's clock.
	pipe.SetTranslate(translate.Options{Now: h.clock.Now})
	ctx := context.Background()
	data := []byte(`{"id":"r","conditions":[{"path_prefix":"/"}],"targets":[{"host":"10.0.0.1","port":80}],"require_auth":false}`)
	if _, err := store.Put(ctx, st, model.KindRoutes, "r", data, 0); err != nil {
		t.Fatal(err)
	}
	if err := pipe.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := httpStatus(h.check(envoyReq{routeID: rid("r"), src: "198.51.100.9"})); st != 200 {
		t.Fatalf("before the ban: %d", st)
	}
	d := &StoreIPDenier{Store: st, Now: h.clock.Now}
	until := h.clock.Now().Add(time.Hour)
	if err := d.DenyIP(ctx, "198.51.100.9", until, "waf: 5 violations"); err != nil {
		t.Fatal(err)
	}
	// A second ban of the same client replaces the first (same id), keeping created_at.
	if err := d.DenyIP(ctx, "198.51.100.9", until.Add(time.Hour), "again"); err != nil {
		t.Fatal(err)
	}
	rules, err := st.List(ctx, model.KindIPRules)
	if err != nil || len(rules) != 1 {
		t.Fatalf("ip rules %d %v", len(rules), err)
	}
	if err := pipe.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if st := httpStatus(h.check(envoyReq{routeID: rid("r"), src: "198.51.100.9"})); st != 403 {
		t.Fatalf("banned client: %d", st)
	}
	if st := httpStatus(h.check(envoyReq{routeID: rid("r"), src: "198.51.100.10"})); st != 200 {
		t.Fatalf("other client: %d", st)
	}
	h.clock.Add(3 * time.Hour)
	if st := httpStatus(h.check(envoyReq{routeID: rid("r"), src: "198.51.100.9"})); st != 200 {
		t.Fatalf("after the ban: %d", st)
	}
}
