package store_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/store/storetest"
)

func TestBoltConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestBoltReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.db")
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := store.Create(t.Context(), s, "routes", "r1", []byte(`{"id":"r1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	o, err := s2.Get(t.Context(), "routes", "r1")
	if err != nil || o.Revision != rev {
		t.Fatalf("after reopen: %+v %v", o, err)
	}
	if cur, _ := s2.Revision(t.Context()); cur != rev {
		t.Fatalf("revision after reopen %d, want %d", cur, rev)
	}
}

func TestBoltReopenKeepsLiveness(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gw.db")
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	if err := s.Touch(t.Context(), "svc-1", t0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got, err := s2.LastSeen(t.Context()); err != nil || len(got) != 1 || !got["svc-1"].Equal(t0) {
		t.Fatalf("after reopen: %v %v", got, err)
	}
	if rev, _ := s2.Revision(t.Context()); rev != 0 {
		t.Fatalf("a touch made revision %d", rev)
	}
}
