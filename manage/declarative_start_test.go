package manage_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// At start serve stores the file before the pipeline's first Sync, so no model is applied
// yet: the file is still checked against what the store holds, as on SIGHUP. A file whose
// route names a policy that only the store holds (written through the API) is valid, and a
// file whose route names a policy nobody holds is refused.
func TestFileAtStartIsCheckedAgainstTheStore(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := store.Put(context.Background(), st, model.KindPolicies, "stored-pol", []byte(`{"id":"stored-pol","rules":[{"expression":"true","action":"allow"}]}`), 0); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	pipe := pipeline.New(st, log) // not synced: as at start
	api := manage.New(manage.Options{Store: st, Model: pipe, Keys: sha256Minter{}, Logger: log, AdminTokenHash: manage.HashToken(token)})
	dir := t.TempDir()
	write := func(name, policy string) string {
		p := filepath.Join(dir, name)
		body := "routes:\n  - id: r1\n    conditions: [{path_prefix: /a}]\n    targets: [{host: 10.0.0.1, port: 80}]\n    auth: {policies: [" + policy + "]}\n"
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := api.StoreFile(t.Context(), write("missing.yaml", "nobody-pol")); err == nil {
		t.Fatal("a file naming a policy nobody holds was stored")
	}
	if _, err := api.StoreFile(t.Context(), write("good.yaml", "stored-pol")); err != nil {
		t.Fatalf("a file naming a stored policy was refused at start: %v", err)
	}
	if err := pipe.Sync(t.Context()); err != nil {
		t.Fatalf("the stored revision: %v", err)
	}
}
