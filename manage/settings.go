package manage

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

func (a *API) settingsRoutes() {
	const tag = "settings"
	path := Prefix + "/settings"
	sample := &model.Settings{}
	a.handle(endpoint{method: "GET", path: path, summary: "Get the global settings", tag: tag, response: sample, status: 200}, a.getSettings)
	a.handle(endpoint{method: "PUT", path: path, summary: "Replace the global settings: the body is the whole object, a field left out is removed (If-Match: revision)", tag: tag, request: sample, response: sample, status: 200}, a.putSettings)
	a.handle(patchEndpoint(path, "Change some of the global settings", tag, sample), a.patchSettings)
}

func (a *API) getSettings(w http.ResponseWriter, r *http.Request) {
	obj, err := a.load(r.Context(), model.KindSettings, model.SettingsID)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusOK, &model.Settings{ID: model.SettingsID})
		return
	}
	if err != nil {
		a.writeStoreError(w, r, model.KindSettings, model.SettingsID, err)
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%d"`, obj.GetMeta().Revision))
	writeJSON(w, http.StatusOK, obj)
}

func (a *API) patchSettings(w http.ResponseWriter, r *http.Request) {
	r.SetPathValue("id", model.SettingsID)
	a.patch(model.KindSettings)(w, r)
}

func (a *API) putSettings(w http.ResponseWriter, r *http.Request) {
	r.SetPathValue("id", model.SettingsID)
	a.replace(model.KindSettings)(w, r)
}
