package manage

import (
	"net/http"

	"github.com/api-gateway/api-gateway/model"
)

func (a *API) routes() {
	a.handle(endpoint{method: "GET", path: "/health", summary: "Liveness: the process answers", tag: "probes", public: true, status: 200}, a.health)
	a.handle(endpoint{method: "GET", path: "/ready", summary: "Readiness: store reachable and configuration applied", tag: "probes", public: true, status: 200}, a.readyz)
	a.crud(model.KindRoutes, &model.Route{}, "routes")
	a.serviceRoutes()
	a.apiKeyRoutes()
	a.crud(model.KindRateLimits, &model.RateLimit{}, "rate-limits")
	a.crud(model.KindIPRules, &model.IPRule{}, "ip-rules")
	a.crud(model.KindPolicies, &model.Policy{}, "policies")
	a.crud(model.KindTenants, &model.Tenant{}, "tenants")
	a.settingsRoutes()
	a.handle(endpoint{method: "GET", path: Prefix + "/openapi.json", summary: "This document", tag: "docs", status: 200}, a.openapi)
	a.handle(endpoint{method: "GET", path: "/docs", summary: "A page that renders the OpenAPI document", tag: "docs", public: true, status: 200}, a.docs)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, http.StatusNotFound, CodeNotFound, "no such endpoint", nil)
	})
}
