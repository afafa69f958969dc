package store

import (
	"log/slog"
	"testing"

	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/model"
)

// A client that retries a transaction whose reply was lost sends the same call again; the
// marker makes the second run return the first one's revision without writing twice.
func TestRedisTxnRetryAppliesOnce(t *testing.T) {
	rs := testutil.StartRedis(t)
	r, err := openRedis(t.Context(), "redis://"+rs.Addr+"?prefix=idem", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ops := []Op{{Type: OpCreate, Kind: model.KindRoutes, ID: "a", Data: []byte(`{}`)}}
	rev1, err := r.txn(t.Context(), "same-call", ops)
	if err != nil {
		t.Fatal(err)
	}
	rev2, err := r.txn(t.Context(), "same-call", ops)
	if err != nil || rev2 != rev1 {
		t.Fatalf("retried create: rev %d (first %d), err %v", rev2, rev1, err)
	}
	if cur, _ := r.Revision(t.Context()); cur != rev1 {
		t.Fatalf("retry bumped the revision: %d, want %d", cur, rev1)
	}
	// A different call with the same op is a real second create: ErrExists.
	if _, err := r.txn(t.Context(), "other-call", ops); err == nil {
		t.Fatal("second create succeeded")
	}
}

// The revision floor: a replica that has seen revision N never gets a revision <= N back,
// even when Redis's counter is behind (data lost).
func TestRedisTxnRevisionFloor(t *testing.T) {
	rs := testutil.StartRedis(t)
	r, err := openRedis(t.Context(), "redis://"+rs.Addr+"?prefix=floor", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.observe(41)
	rev, err := r.Txn(t.Context(), []Op{{Type: OpPut, Kind: model.KindTenants, ID: "t", Data: []byte(`{}`)}})
	if err != nil || rev != 42 {
		t.Fatalf("rev %d err %v, want 42", rev, err)
	}
}
