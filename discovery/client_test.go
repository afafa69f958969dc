package discovery_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/discovery"
	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

const adminToken = "test-admin-token"

func quietLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// gateway runs the real management API over a real embedded store and pipeline.
type gateway struct {
	store store.Store
	url   string
}

func startGateway(t *testing.T) *gateway {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	pipe := pipeline.New(st, quietLog())
	if err := pipe.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { pipe.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	api := manage.New(manage.Options{Store: st, Model: pipe, Logger: quietLog(), AdminTokenHash: manage.HashToken(adminToken)})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &gateway{store: st, url: srv.URL}
}

// service reads an instance from the store, with its last heartbeat merged from liveness.
func (g *gateway) service(t *testing.T, id string) (*model.Service, error) {
	t.Helper()
	raw, err := g.store.Get(t.Context(), model.KindServices, id)
	if err != nil {
		return nil, err
	}
	snap, errs := model.Decode(raw.Revision, map[model.Kind][]model.RawObject{model.KindServices: {raw}})
	if len(errs) > 0 || len(snap.Services) != 1 {
		t.Fatalf("stored service does not decode: %v", errs)
	}
	// Heartbeats renew liveness, not the stored object: read the instance as the API shows it.
	live, err := g.store.LastSeen(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	store.ApplyLiveness(snap.Services, live)
	return snap.Services[0], nil
}

// eventually polls cond until it holds or limit passes.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRegisterHeartbeatDeregister(t *testing.T) {
	g := startGateway(t)
	c := discovery.NewClient(g.url, adminToken, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	reg, err := c.Register(ctx, discovery.ServiceInfo{
		ID: "users-1", Name: "users", Host: "10.0.0.7", Port: 8080, Protocol: "http", Weight: 5,
		Metadata: map[string]string{"version": "v2"}, TTL: 150 * time.Millisecond,
		Health: &discovery.HealthCheck{HTTP: "http://10.0.0.7:8080/health", Interval: 10 * time.Second, Timeout: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	if reg.ID() != "users-1" {
		t.Fatalf("id %q", reg.ID())
	}
	sv, err := g.service(t, "users-1")
	if err != nil {
		t.Fatal(err)
	}
	if sv.Name != "users" || sv.Port != 8080 || sv.Weight == nil || *sv.Weight != 5 || sv.Metadata["version"] != "v2" ||
		sv.TTL.D() != 150*time.Millisecond || sv.HealthURL() != "http://10.0.0.7:8080/health" ||
		sv.HealthCk.Interval.D() != 10*time.Second || sv.LastHeartbeat.IsZero() {
		t.Fatalf("stored %+v", sv)
	}
	first := sv.LastHeartbeat
	eventually(t, 2*time.Second, "two heartbeats", func() bool { return reg.Heartbeats() >= 2 })
	sv, _ = g.service(t, "users-1")
	if !sv.LastHeartbeat.After(first) {
		t.Fatalf("heartbeat did not move last_heartbeat: %s -> %s", first, sv.LastHeartbeat)
	}
	list, err := c.Instances(t.Context(), "users")
	if err != nil || len(list) != 1 || list[0].ID != "users-1" {
		t.Fatalf("instances: %+v %v", list, err)
	}

	// The gateway drops the instance (swept away after a partition): the next heartbeat
	// gets 404 and registers it again.
	if _, err := store.Delete(t.Context(), g.store, model.KindServices, "users-1", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Second, "re-registration", func() bool {
		_, err := g.service(t, "users-1")
		return err == nil
	})

	if err := reg.Deregister(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := g.service(t, "users-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after deregister: %v", err)
	}
	select {
	case <-reg.Done():
	default:
		t.Fatal("heartbeats still running after Deregister")
	}
	// Deregistering twice is fine.
	if err := c.Deregister(t.Context(), "users-1"); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterStopsWithContext(t *testing.T) {
	g := startGateway(t)
	c := discovery.NewClient(g.url, adminToken, nil)
	ctx, cancel := context.WithCancel(t.Context())
	reg, err := c.Register(ctx, discovery.ServiceInfo{Name: "orders", Host: "orders.local", Port: 9000, TTL: 60 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if reg.ID() != "orders-orders.local-9000" {
		t.Fatalf("default id %q", reg.ID())
	}
	cancel()
	select {
	case <-reg.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("heartbeats did not stop when ctx ended")
	}
	// Still registered: it simply expires after its TTL.
	if _, err := g.service(t, reg.ID()); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterErrors(t *testing.T) {
	g := startGateway(t)
	_, err := discovery.NewClient(g.url, "wrong-token", nil).Register(t.Context(), discovery.ServiceInfo{Name: "a", Host: "h", Port: 1})
	var ae *discovery.APIError
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("bad token: %v", err)
	}
	_, err = discovery.NewClient(g.url, adminToken, nil).Register(t.Context(), discovery.ServiceInfo{Name: "a", Host: "h", Port: 70000})
	if !errors.As(err, &ae) || ae.Status != 400 || len(ae.Details) == 0 || ae.Details[0].Field != "port" {
		t.Fatalf("bad port: %#v", err)
	}
	// A TTL of zero registers without heartbeats.
	reg, err := discovery.NewClient(g.url, adminToken, nil).Register(t.Context(), discovery.ServiceInfo{Name: "a", Host: "h", Port: 1})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-reg.Done():
	default:
		t.Fatal("a registration without TTL must not heartbeat")
	}
}
