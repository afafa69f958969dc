package manage_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/internal/testutil"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// rebuildCounter is a pipeline consumer that counts the revisions it is handed: every
// consumer of the binary (xDS, ext_authz, rate limits) rebuilds that often.
type rebuildCounter struct{ n atomic.Int64 }

func (c *rebuildCounter) Name() string { return "counter" }
func (c *rebuildCounter) Prepare(context.Context, *model.Snapshot) (func(), error) {
	return func() { c.n.Add(1) }, nil
}

// revisionHeartbeat is the heartbeat as it was before liveness left the model: the instance
// rewritten with its new last_heartbeat at a new revision, answered once the revision
// applied. It is the baseline of BenchmarkHeartbeat.
func revisionHeartbeat(st store.Store, pipe *pipeline.Pipeline) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		for attempt := 0; ; attempt++ {
			raw, err := st.Get(r.Context(), model.KindServices, id)
			if err != nil {
				http.Error(w, err.Error(), http.StatusNotFound)
				return
			}
			var s model.Service
			_ = json.Unmarshal(raw.Data, &s)
			s.LastHeartbeat = time.Now().UTC()
			if s.Status == model.StatusExpired {
				s.Status = ""
			}
			s.UpdatedAt = s.LastHeartbeat
			data, _ := json.Marshal(&s)
			rev, err := store.Put(r.Context(), st, model.KindServices, id, data, raw.Revision)
			if errors.Is(err, store.ErrConflict) && attempt < 5 {
				continue
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			wctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			_ = pipe.WaitFor(wctx, rev)
			cancel()
			s.Revision = rev
			_ = json.NewEncoder(w).Encode(&s)
			return
		}
	}
}

// BenchmarkHeartbeat: one instance heartbeating over HTTP, on the embedded store and on a
// local redis-server. "revision" is the former heartbeat (a revision each), "liveness" the
// API's heartbeat now. Reported per op: ns, and per 1,000 heartbeats the store revisions
// made and the consumer rebuilds they caused. Compare liveness to revision within one run.
func BenchmarkHeartbeat(b *testing.B) {
	stores := map[string]func(b *testing.B) store.Store{
		"bolt": func(b *testing.B) store.Store {
			st, err := store.OpenBolt(filepath.Join(b.TempDir(), "gw.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		},
		"redis": func(b *testing.B) store.Store {
			rs := testutil.StartRedis(b)
			st, err := store.OpenRedis(b.Context(), "redis://"+rs.Addr, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { st.Close() })
			return st
		},
	}
	for _, backend := range []string{"bolt", "redis"} {
		for _, mode := range []string{"revision", "liveness"} {
			b.Run(backend+"/"+mode, func(b *testing.B) {
				st := stores[backend](b)
				log := slog.New(slog.NewJSONHandler(io.Discard, nil))
				counter := &rebuildCounter{}
				pipe := pipeline.New(st, log, counter)
				api := manage.New(manage.Options{Store: st, Model: pipe, Keys: sha256Minter{}, Logger: log, AdminTokenHash: manage.HashToken(token)})
				if err := pipe.Sync(b.Context()); err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go pipe.Run(ctx)
				mux := http.NewServeMux()
				mux.Handle("PUT /revision/{id}", revisionHeartbeat(st, pipe))
				mux.Handle("/", api)
				srv := httptest.NewServer(mux)
				defer srv.Close()
				reg, _ := http.NewRequest("POST", srv.URL+"/api/v1/management/services",
					strings.NewReader(`{"id":"users-1","name":"users","host":"10.0.0.5","port":8080,"ttl":"30s"}`))
				reg.Header.Set("Authorization", "Bearer "+token)
				reg.Header.Set("Content-Type", "application/json")
				if res, err := srv.Client().Do(reg); err != nil || res.StatusCode != 201 {
					b.Fatalf("register: %v %v", res, err)
				} else {
					res.Body.Close()
				}
				path := srv.URL + "/api/v1/management/services/users-1/heartbeat"
				if mode == "revision" {
					path = srv.URL + "/revision/users-1"
				}
				client := srv.Client()
				beat := func() {
					req, _ := http.NewRequest("PUT", path, nil)
					req.Header.Set("Authorization", "Bearer "+token)
					res, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						b.Fatalf("heartbeat: %d", res.StatusCode)
					}
				}
				beat() // warm the connection
				rev0, _ := st.Revision(b.Context())
				builds0 := counter.n.Load()
				b.ResetTimer()
				for b.Loop() {
					beat()
				}
				b.StopTimer()
				time.Sleep(150 * time.Millisecond) // let the pipeline catch the last revision
				rev1, _ := st.Revision(b.Context())
				b.ReportMetric(float64(rev1-rev0)*1000/float64(b.N), "revisions/1k")
				b.ReportMetric(float64(counter.n.Load()-builds0)*1000/float64(b.N), "rebuilds/1k")
			})
		}
	}
}
