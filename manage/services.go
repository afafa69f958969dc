package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

func (a *API) serviceRoutes() {
	const tag = "services"
	base := Prefix + "/services"
	sample := &model.Service{}
	a.handle(endpoint{method: "GET", path: base, summary: "List service instances (filter: ?name=)", tag: tag, response: sample, list: true, status: 200}, a.listServices)
	a.handle(endpoint{method: "POST", path: base, summary: "Register a service instance (idempotent: the same id replaces)", tag: tag, request: sample, response: sample, status: 201}, a.register)
	a.handle(endpoint{method: "GET", path: base + "/{id}", summary: "Get a service instance", tag: tag, response: sample, status: 200}, a.getService)
	a.handle(endpoint{method: "PUT", path: base + "/{id}", summary: "Replace a service instance: the body is the whole instance, a field left out is removed", tag: tag, request: sample, response: sample, status: 200}, a.replace(model.KindServices))
	a.handle(patchEndpoint(base+"/{id}", "Change some fields of a service instance", tag, sample), a.patch(model.KindServices))
	a.handle(endpoint{method: "DELETE", path: base + "/{id}", summary: "Deregister a service instance", tag: tag, status: 204}, a.deregister)
	a.handle(endpoint{method: "PUT", path: base + "/{id}/heartbeat", summary: "Heartbeat: the instance is alive (renews its TTL; a new revision only when an expired instance comes back)", tag: tag, response: sample, status: 200}, a.heartbeat)
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	obj, answered := a.prepareWrite(w, r, model.KindServices, "")
	if answered {
		return
	}
	s := obj.(*model.Service)
	if s.ID == "" {
		s.ID = s.DefaultID()
	}
	s.LastHeartbeat = a.Now().UTC()
	prev, err := a.load(r.Context(), model.KindServices, s.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		a.writeObject(w, r, model.KindServices, s, store.OpCreate, 0, http.StatusCreated, nil)
	case err != nil:
		a.writeStoreError(w, r, model.KindServices, s.ID, err)
	default:
		a.writeObject(w, r, model.KindServices, s, store.OpPut, prev.GetMeta().Revision, http.StatusOK, prev)
	}
}

// listServices is the generic list with each instance's last heartbeat brought up to its
// liveness entry (heartbeats renew liveness, not the stored object).
func (a *API) listServices(w http.ResponseWriter, r *http.Request) {
	const kind = model.KindServices
	rev, err := a.Store.Revision(r.Context())
	if err != nil {
		a.writeStoreError(w, r, kind, "", err)
		return
	}
	raws, err := a.Store.List(r.Context(), kind)
	if err != nil {
		a.writeStoreError(w, r, kind, "", err)
		return
	}
	live, err := a.Store.LastSeen(r.Context())
	if err != nil {
		a.writeStoreError(w, r, kind, "", err)
		return
	}
	name := r.URL.Query().Get("name")
	items := make([]any, 0, len(raws))
	for _, raw := range raws {
		obj, err := decodeRaw(kind, raw)
		if err != nil {
			a.log.WarnContext(r.Context(), "stored object does not decode", "kind", string(kind), "id", raw.ID, "error", err.Error())
			continue
		}
		s := obj.(*model.Service)
		if name != "" && s.Name != name {
			continue
		}
		store.ApplyLiveness([]*model.Service{s}, live)
		items = append(items, s)
	}
	writeJSON(w, http.StatusOK, ListResponse[any]{Items: items, Count: len(items), Revision: rev})
}

// loadService reads one instance with its last heartbeat merged from liveness.
func (a *API) loadService(ctx context.Context, id string) (*model.Service, error) {
	obj, err := a.load(ctx, model.KindServices, id)
	if err != nil {
		return nil, err
	}
	s := obj.(*model.Service)
	live, err := a.Store.LastSeen(ctx, id)
	if err != nil {
		return nil, err
	}
	store.ApplyLiveness([]*model.Service{s}, live)
	return s, nil
}

func (a *API) getService(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s, err := a.loadService(r.Context(), id)
	if err != nil {
		a.writeStoreError(w, r, model.KindServices, id, err)
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%d"`, s.Revision))
	writeJSON(w, http.StatusOK, s)
}

// deregister is the generic delete, then drops the instance's liveness entry once the
// instance is gone (an entry of an instance that exists again is left alone).
func (a *API) deregister(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	a.remove(model.KindServices)(w, r)
	a.forgetIfGone(r.Context(), id)
}

// forgetIfGone removes id's liveness entry when no instance has that id. A failure is only
// logged: the sweeper removes entries without an instance on its next pass.
func (a *API) forgetIfGone(ctx context.Context, id string) {
	ctx = context.WithoutCancel(ctx)
	if _, err := a.Store.Get(ctx, model.KindServices, id); !errors.Is(err, store.ErrNotFound) {
		return
	}
	if err := a.Store.Forget(ctx, id); err != nil {
		a.log.WarnContext(ctx, "could not remove a deregistered instance's liveness entry", "id", id, "error", err.Error())
	}
}

// heartbeat renews an instance's liveness. Liveness is not configuration: a heartbeat of a
// serving instance writes only its liveness entry, no revision, so no replica reloads and no
// consumer rebuilds. Only an instance that was out of the load balancing for its TTL
// (marked expired by the sweeper, or past its TTL and not yet swept) is written back, since
// its coming back changes what is served.
//
// Unknown ids are answered 404 before anything is written, so heartbeats cannot grow the
// liveness keyspace. The sweeper marks an instance expired with a write conditional on the
// revision it read, then reads liveness again and undoes the mark if a heartbeat landed
// meanwhile; this handler touches liveness and then reads the instance again. So whichever
// of the two runs second sees the other: a heartbeat racing the sweeper never leaves a live
// instance expired.
func (a *API) heartbeat(w http.ResponseWriter, r *http.Request) {
	const kind = model.KindServices
	id := r.PathValue("id")
	ctx := r.Context()
	for attempt := 0; ; attempt++ {
		s, err := a.loadService(ctx, id)
		if err != nil {
			a.writeStoreError(w, r, kind, id, err)
			return
		}
		now := a.Now().UTC()
		if !a.heartbeatWrites(s, now) {
			if err := a.Store.Touch(ctx, id, now); err != nil {
				a.writeStoreError(w, r, kind, id, err)
				return
			}
			// Only the instance is read again: its liveness is at least now, just touched.
			obj, err := a.load(ctx, kind, id)
			if errors.Is(err, store.ErrNotFound) {
				a.forgetIfGone(ctx, id) // deleted between the reads: no entry left behind
			}
			if err != nil {
				a.writeStoreError(w, r, kind, id, err)
				return
			}
			s = obj.(*model.Service)
			if s.LastHeartbeat.Before(now) {
				s.LastHeartbeat = now
			}
			if !a.heartbeatWrites(s, now) {
				writeJSON(w, http.StatusOK, s)
				return
			}
			// The sweeper marked it expired meanwhile: write it back below.
		}
		rev := s.Revision
		s.LastHeartbeat = now
		if s.Status == model.StatusExpired {
			s.Status = ""
		}
		s.UpdatedAt = now
		s.Revision = 0
		data, err := json.Marshal(s)
		if err != nil {
			WriteError(w, r, http.StatusInternalServerError, CodeInternal, "could not encode the object", nil)
			return
		}
		newRev, err := store.Put(ctx, a.Store, kind, id, data, rev)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				a.forgetIfGone(ctx, id)
			}
			a.writeStoreError(w, r, kind, id, err)
			return
		}
		s.Revision = newRev
		// A heartbeat reports liveness, not a configuration change: a refused revision is
		// the refused object's to fix (GET /ready names it), not the live instance's.
		// A wait that runs out is not answered either: the next heartbeat renews again.
		_ = a.waitApplied(ctx, newRev)
		writeJSON(w, http.StatusOK, s)
		return
	}
}

// heartbeatWrites tells whether a heartbeat at now changes what is served for s: s is out
// of the load balancing for missing its TTL (its last heartbeat already merged from
// liveness), and the heartbeat brings it back.
func (a *API) heartbeatWrites(s *model.Service, now time.Time) bool {
	return s.Status == model.StatusExpired || s.Expired(now)
}
