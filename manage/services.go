package manage

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

func (a *API) serviceRoutes() {
	const tag = "services"
	base := Prefix + "/services"
	sample := &model.Service{}
	a.handle(endpoint{method: "GET", path: base, summary: "List service instances (filter: ?name=)", tag: tag, response: sample, list: true, status: 200}, a.list(model.KindServices))
	a.handle(endpoint{method: "POST", path: base, summary: "Register a service instance (idempotent: the same id replaces)", tag: tag, request: sample, response: sample, status: 201}, a.register)
	a.handle(endpoint{method: "GET", path: base + "/{id}", summary: "Get a service instance", tag: tag, response: sample, status: 200}, a.get(model.KindServices))
	a.handle(endpoint{method: "PUT", path: base + "/{id}", summary: "Replace a service instance: the body is the whole instance, a field left out is removed", tag: tag, request: sample, response: sample, status: 200}, a.replace(model.KindServices))
	a.handle(patchEndpoint(base+"/{id}", "Change some fields of a service instance", tag, sample), a.patch(model.KindServices))
	a.handle(endpoint{method: "DELETE", path: base + "/{id}", summary: "Deregister a service instance", tag: tag, status: 204}, a.remove(model.KindServices))
	a.handle(endpoint{method: "PUT", path: base + "/{id}/heartbeat", summary: "Heartbeat: the instance is alive (renews its TTL)", tag: tag, response: sample, status: 200}, a.heartbeat)
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

func (a *API) heartbeat(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for attempt := 0; ; attempt++ {
		obj, err := a.load(r.Context(), model.KindServices, id)
		if err != nil {
			a.writeStoreError(w, r, model.KindServices, id, err)
			return
		}
		s := obj.(*model.Service)
		rev := s.Revision
		s.LastHeartbeat = a.Now().UTC()
		if s.Status == model.StatusExpired {
			s.Status = ""
		}
		s.UpdatedAt = s.LastHeartbeat
		s.Revision = 0
		data, _ := json.Marshal(s)
		newRev, err := store.Put(r.Context(), a.Store, model.KindServices, id, data, rev)
		if errors.Is(err, store.ErrConflict) && attempt < 5 {
			continue
		}
		if err != nil {
			a.writeStoreError(w, r, model.KindServices, id, err)
			return
		}
		s.Revision = newRev
		// A heartbeat reports liveness, not a configuration change: a refused revision is
		// the refused object's to fix (GET /ready names it), not the live instance's.
		// A wait that runs out is not answered either: the next heartbeat renews again.
		_ = a.waitApplied(r.Context(), newRev)
		writeJSON(w, http.StatusOK, s)
		return
	}
}
