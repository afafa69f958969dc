package server

import (
	"fmt"
	"strings"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
)

// CheckObject is the xDS consumer's object check (pipeline.ObjectChecker): a route is
// checked by ValidateRoute; other objects are checked with the whole revision.
func (s *Server) CheckObject(obj model.Object, snap *model.Snapshot) model.FieldErrors {
	if r, ok := obj.(*model.Route); ok {
		return s.ValidateRoute(r, snap)
	}
	return nil
}

// ValidateRoute is the management API's validator for routes (manage.API.AddValidator):
// targets must name registered services, the route must not conflict with another (same
// host and same match), and its translation must pass Envoy's and grpc-go's validation.
func (s *Server) ValidateRoute(obj model.Object, snap *model.Snapshot) model.FieldErrors {
	r, ok := obj.(*model.Route)
	if !ok || len(r.Validate()) > 0 {
		return nil // the model's own errors are reported by the API
	}
	var errs model.FieldErrors
	known := map[string]bool{}
	for _, sv := range snap.Services {
		known[sv.Name] = true
	}
	for i, t := range r.Targets {
		if t.Service != "" && !known[t.Service] {
			errs.Add(fmt.Sprintf("targets[%d].service", i), "no service named %q is registered", t.Service)
		}
	}
	errs = append(errs, s.conflicts(r, snap)...)
	// Translate the route alone, with only the services it names (a dry run must not cost
	// a whole-model build per write).
	one := *snap
	one.Routes = []*model.Route{r}
	one.Services = nil
	named := map[string]bool{}
	for _, t := range r.Targets {
		named[t.Service] = t.Service != ""
	}
	for _, sv := range snap.Services {
		if named[sv.Name] {
			one.Services = append(one.Services, sv)
		}
	}
	cfg, err := translate.Translate(&one, s.opts.Translate)
	if err != nil {
		errs.Add("", "%v", err)
		return errs
	}
	if e, bad := cfg.RouteErrors[r.ID]; bad {
		// A route past the rate-limit caps is the rate-limit consumer's to refuse, at the
		// model's field (its check counts the same way); reported here it would be said twice.
		if !strings.HasPrefix(e, ir.RouteRateLimitsErrorPrefix) {
			errs.Add("", "%s", e)
		}
		return errs
	}
	for _, g := range []envoy.Flavor{envoy.FlavorEnvoy, envoy.FlavorGRPC} {
		res, err := envoy.Build(cfg, envoy.Options{Flavor: g})
		if err != nil {
			errs.Add("", "%v", err)
			break
		}
		if e, bad := res.RouteErrors[r.ID]; bad {
			errs.Add("", "%s", e)
			break
		}
	}
	return errs
}

// conflictIndex maps "host\x00match key" to the routes with that match, for one snapshot.
type conflictIndex struct {
	snap *model.Snapshot
	keys map[string][]string
}

// conflictKeys returns the index of a snapshot, built once per snapshot (the API validates
// every write, and every object of a declarative file, against the same snapshot).
func (s *Server) conflictKeys(snap *model.Snapshot) map[string][]string {
	s.conflictMu.Lock()
	defer s.conflictMu.Unlock()
	if s.conflictIdx != nil && s.conflictIdx.snap == snap {
		return s.conflictIdx.keys
	}
	keys := map[string][]string{}
	for _, o := range snap.Routes {
		for j := range o.Conditions {
			m, err := translate.MatchOf(&o.Conditions[j])
			if err != nil {
				continue
			}
			k := translate.MatchKey(m)
			for _, d := range routeDomains(o) {
				keys[d+"\x00"+k] = append(keys[d+"\x00"+k], o.ID)
			}
		}
	}
	s.conflictIdx = &conflictIndex{snap: snap, keys: keys}
	return keys
}

// conflicts reports conditions equal to a condition of another route on a shared host.
func (s *Server) conflicts(r *model.Route, snap *model.Snapshot) model.FieldErrors {
	var errs model.FieldErrors
	index := s.conflictKeys(snap)
	hosts := translate.RouteHosts(r) // the virtual hosts translation puts the route in
	for i := range r.Conditions {
		m, err := translate.MatchOf(&r.Conditions[i])
		if err != nil {
			return nil
		}
		k := translate.MatchKey(m)
		reported := map[string]bool{}
		for _, h := range hosts {
			// Routes whose hosts share an Envoy domain ("api.test" and "api.test:*") land in
			// one virtual host: the same match there is a conflict too.
			for _, d := range translate.Domains(h) {
				for _, id := range index[d+"\x00"+k] {
					if id != r.ID && !reported[id] {
						reported[id] = true
						errs.Add(fmt.Sprintf("conditions[%d]", i), "conflicts with route %q: same host %q and the same match", id, h)
					}
				}
			}
		}
	}
	return errs
}

// routeDomains lists the Envoy domains of a route's hosts (translate.Domains of each).
func routeDomains(r *model.Route) []string {
	var out []string
	for _, h := range translate.RouteHosts(r) {
		out = append(out, translate.Domains(h)...)
	}
	return out
}
