// Package translate turns a model snapshot into the IR (ir). It is pure: no I/O, no
// clocks besides the one passed in, deterministic output (everything sorted, names derived
// from the source). Translation is best effort: a route that cannot be translated is
// reported in Config.RouteErrors and left out; the others are unaffected.
package translate

import (
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

// Options carry what the model does not: addresses from the environment and the clock.
type Options struct {
	// ListenerAddress is the Envoy HTTP listener, host:port (default 0.0.0.0:10000).
	ListenerAddress string
	// ControlPlane is host:port where Envoy reaches this binary's gRPC port.
	ControlPlane string
	// OTLPEndpoint is the OpenTelemetry collector (host:port or URL); empty: no tracing.
	OTLPEndpoint string
	// ServiceName names the gateway in traces (default api-gateway).
	ServiceName string
	// Now decides which service instances are serving (TTL); default time.Now.
	Now func() time.Time
	// UpstreamCAFile is the CA bundle upstream TLS certificates are verified against when a
	// target gives no tls_ca_pem: a path on Envoy's machine, which Envoy reads (default
	// DefaultUpstreamCAFile).
	UpstreamCAFile string
}

// DefaultUpstreamCAFile is the system CA bundle of Debian and Ubuntu (Envoy's images among
// them), Alpine and Arch.
const DefaultUpstreamCAFile = "/etc/ssl/certs/ca-certificates.crt"

// ListenerName is the name of the Envoy HTTP listener.
const ListenerName = "http"

// Translate turns the snapshot into the IR. The error is about the options only; route
// problems are in Config.RouteErrors.
func Translate(snap *model.Snapshot, o Options) (*ir.Config, error) {
	return NewTranslator(o).Translate(snap)
}

// Translator translates revisions one after another, reusing the translation of every route
// whose inputs did not change (the memo key, inputs.routeKey, names the route's revision and
// every other object or derived fact its translation reads). A WAF ban changes the global IP
// set, not whether one exists; a heartbeat changes a service's instances, which only clusters
// hold: neither translates a route again. Not safe for concurrent use.
type Translator struct {
	opts     Options
	memo     map[string]*routePart   // by route id: the last translation of each route
	clusters map[string]*clusterPart // by route id: the last clusters of each route
	stats    Stats
}

// Stats count route translations since the Translator was made.
type Stats struct {
	// Translated routes (their memo entry was missing or stale) and Reused ones.
	Translated uint64
	Reused     uint64
}

// NewTranslator returns a Translator with an empty memo.
func NewTranslator(o Options) *Translator {
	return &Translator{opts: o, memo: map[string]*routePart{}, clusters: map[string]*clusterPart{}}
}

// Stats returns the counts so far.
func (t *Translator) Stats() Stats { return t.stats }

// Translate turns the snapshot into the IR (see the package Translate).
func (t *Translator) Translate(snap *model.Snapshot) (*ir.Config, error) {
	o := t.opts
	cfg, err := base(snap, o)
	if err != nil {
		return nil, err
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	tm := time.Time{}
	if len(snap.Routes) > 0 || len(snap.Services) > 0 || len(snap.IPRules) > 0 {
		tm = now()
	}
	idx := newIndex(snap, tm)
	if o.UpstreamCAFile != "" {
		idx.caFile = o.UpstreamCAFile
	}
	in := newInputs(snap, tm)
	cfg.Authz = in.authzConfig()
	memo := make(map[string]*routePart, len(snap.Routes))
	clusterMemo := make(map[string]*clusterPart, len(snap.Routes))
	byHost := map[string][]*ir.Route{}
	// taken holds every cluster name given out: a name is given once, or the whole revision
	// would fail validation. The naming (names.go) makes a second claim impossible for ids
	// the model accepts; an id written around the model's checks loses its route, not the
	// revision.
	taken := map[string]string{}
	for _, name := range idx.serviceNames {
		taken[ServiceClusterName(name)] = "services/" + name
	}
	for _, r := range snap.Routes {
		err := checkNamePart(r.ID)
		var routes []*ir.Route
		var clusters []*ir.Cluster
		var part *routePart
		if err == nil {
			key, ok := in.routeKey(r)
			if prev := t.memo[r.ID]; ok && prev != nil && prev.key == key {
				part = prev
				t.stats.Reused++
			} else {
				part = translateRoutePart(r, in)
				part.key = key
				t.stats.Translated++
			}
			if ok {
				memo[r.ID] = part
			}
			routes, clusters, err = finishRoute(part, func() ([]*ir.Cluster, error) {
				key, ok := idx.clusterKey(r)
				if prev := t.clusters[r.ID]; ok && prev != nil && prev.key == key {
					clusterMemo[r.ID] = prev
					return prev.clusters, prev.err
				}
				cs, _, err := routeClusters(r, idx)
				if ok {
					clusterMemo[r.ID] = &clusterPart{key: key, clusters: cs, err: err}
				}
				return cs, err
			})
		}
		hosts := RouteHosts(r)
		for _, h := range hosts {
			if err == nil {
				err = checkHost(h)
			}
		}
		for _, c := range clusters {
			if owner, dup := taken[c.Name]; dup && err == nil {
				err = fmt.Errorf("cluster name %q is already used by %s", c.Name, owner)
			}
		}
		if err != nil {
			cfg.RouteErrors[r.ID] = err.Error()
			continue
		}
		for _, c := range clusters {
			taken[c.Name] = "routes/" + r.ID
		}
		cfg.Routes = append(cfg.Routes, r.ID)
		cfg.Clusters = append(cfg.Clusters, clusters...)
		if w := routeWarnings(r, clusters); len(w) > 0 {
			if cfg.RouteWarnings == nil {
				cfg.RouteWarnings = map[string][]string{}
			}
			cfg.RouteWarnings[r.ID] = w
		}
		cfg.Authz.Routes = append(cfg.Authz.Routes, part.auth)
		for _, h := range hosts {
			byHost[h] = append(byHost[h], routes...)
		}
	}
	t.memo, t.clusters = memo, clusterMemo
	cfg.VirtualHosts = virtualHosts(byHost)
	for _, name := range idx.serviceNames {
		c := serviceCluster(name, idx.instances[name])
		cfg.Clusters = append(cfg.Clusters, c)
		cfg.ServiceHosts = append(cfg.ServiceHosts, &ir.ServiceHost{Name: name, Cluster: c.Name})
	}
	sort.Slice(cfg.Clusters, func(i, j int) bool { return cfg.Clusters[i].Name < cfg.Clusters[j].Name })
	sort.Strings(cfg.Routes)
	sort.Slice(cfg.Authz.Routes, func(i, j int) bool { return cfg.Authz.Routes[i].RouteID < cfg.Authz.Routes[j].RouteID })
	domains, errs := RateLimitDomains(snap)
	cfg.RateLimit.Domains = domains
	for _, e := range errs {
		cfg.RateLimit.Problems = append(cfg.RateLimit.Problems, e.Error())
	}
	return cfg, nil
}

// TranslateRoute translates one route against the snapshot (the API's dry run): its Envoy
// routes (one per condition) and clusters.
func TranslateRoute(r *model.Route, snap *model.Snapshot, now time.Time) ([]*ir.Route, []*ir.Cluster, error) {
	return translateRoute(r, newIndex(snap, now), newInputs(snap, now))
}

func base(snap *model.Snapshot, o Options) (*ir.Config, error) {
	if o.ListenerAddress == "" {
		o.ListenerAddress = "0.0.0.0:10000"
	}
	if o.ServiceName == "" {
		o.ServiceName = "api-gateway"
	}
	lh, lp, err := splitHostPort(o.ListenerAddress)
	if err != nil {
		return nil, fmt.Errorf("listener address: %w", err)
	}
	var control ir.Address
	if o.ControlPlane != "" {
		// Empty: no address (a consumer that reads no address, ext_authz, translates
		// without one; the Config then fails validation for Envoy).
		ch, cp, err := splitHostPort(o.ControlPlane)
		if err != nil {
			return nil, fmt.Errorf("control plane address: %w", err)
		}
		control = ir.Address{Host: ch, Port: cp}
	}
	cfg := &ir.Config{
		Revision:     snap.Revision,
		Listener:     ir.Listener{Name: ListenerName, Address: lh, Port: lp},
		ControlPlane: control,
		ServiceName:  o.ServiceName,
		RouteErrors:  map[string]string{},
	}
	if o.OTLPEndpoint != "" {
		a, err := otlpAddress(o.OTLPEndpoint)
		if err != nil {
			return nil, fmt.Errorf("otlp endpoint: %w", err)
		}
		cfg.OTLP = &a
	}
	return cfg, nil
}

func splitHostPort(s string) (string, uint32, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, fmt.Errorf("bad port in %q", s)
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, uint32(n), nil
}

// otlpAddress accepts host:port or an http(s)/grpc URL (default port 4317).
func otlpAddress(s string) (ir.Address, error) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return ir.Address{}, err
		}
		s = u.Host
		if u.Port() == "" {
			s = net.JoinHostPort(u.Hostname(), "4317")
		}
	}
	h, p, err := splitHostPort(s)
	return ir.Address{Host: h, Port: p}, err
}

// index holds what translation looks up repeatedly.
type index struct {
	snap         *model.Snapshot
	instances    map[string][]*model.Service // serving instances by service name, sorted by id
	serviceNames []string                    // every registered name, sorted
	known        map[string]bool
	now          time.Time // the translation's time (zero for a model without routes or services)
	// serving is each service's serving instances as a memo key part (see clusterKey).
	serving map[string]string
	// caFile is Options.UpstreamCAFile (or its default).
	caFile string
}

// clusterKey is the memo key of route r's clusters: the route's revision and, for each
// service it targets, the revisions of that service's serving instances (an instance that
// stops serving, by its TTL or health, leaves the list). ok is false when one of them has
// no revision.
func (idx *index) clusterKey(r *model.Route) (string, bool) {
	var k keyWriter
	k.obj("route:"+r.ID, &r.Meta)
	names := make([]string, 0, len(r.Targets)+1)
	for i := range r.Targets {
		names = append(names, r.Targets[i].Service)
	}
	if m := r.Mirror; m != nil && m.Target != nil {
		names = append(names, m.Target.Service) // the mirror cluster holds its instances too
	}
	for _, name := range names {
		if name == "" {
			continue
		}
		fp, ok := idx.serving[name]
		if !ok {
			var sk keyWriter
			for _, s := range idx.instances[name] {
				sk.obj(s.ID, &s.Meta)
			}
			fp = sk.b.String()
			if sk.bad {
				fp = "\x00bad"
			}
			if idx.serving == nil {
				idx.serving = map[string]string{}
			}
			idx.serving[name] = fp
		}
		if fp == "\x00bad" {
			return "", false
		}
		k.str("service:" + name + "=" + fp)
	}
	return k.b.String(), !k.bad
}

func newIndex(snap *model.Snapshot, now time.Time) *index {
	idx := &index{snap: snap, instances: map[string][]*model.Service{}, known: map[string]bool{}, now: now, caFile: DefaultUpstreamCAFile}
	for _, s := range snap.Services {
		if checkNamePart(s.Name) != nil {
			// Not a name the API stores: its cluster name could be another's (names.go).
			continue
		}
		if !idx.known[s.Name] {
			idx.known[s.Name] = true
			idx.serviceNames = append(idx.serviceNames, s.Name)
		}
		// An instance without a usable address (stored around the API's checks) is no
		// endpoint: left out, it cannot make its service's cluster, and with it the whole
		// revision, fail validation.
		if s.Serving(now) && s.Host != "" && s.Port > 0 && s.Port <= 65535 {
			idx.instances[s.Name] = append(idx.instances[s.Name], s)
		}
	}
	sort.Strings(idx.serviceNames)
	return idx
}

// RouteHosts lists the hosts of route r, lower case, sorted, each once ("*" for a route that
// names none): the virtual hosts it is translated into. The one reading of a route's hosts
// (the API's conflict check reads it too).
func RouteHosts(r *model.Route) []string {
	if len(r.Hosts) == 0 {
		return []string{"*"}
	}
	seen := map[string]bool{}
	var out []string
	for _, h := range r.Hosts {
		h = strings.ToLower(h)
		if !seen[h] {
			seen[h] = true
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}

// Domains returns the Envoy domains of a host: the host itself and, without a port or a
// wildcard, "host:*" so a Host header with a port matches too.
func Domains(host string) []string {
	if host == "*" || strings.Contains(host, "*") || strings.Contains(host, ":") {
		return []string{host}
	}
	return []string{host, host + ":*"}
}

func virtualHosts(byHost map[string][]*ir.Route) []*ir.VirtualHost {
	hosts := make([]string, 0, len(byHost))
	for h := range byHost {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	out := make([]*ir.VirtualHost, 0, len(hosts))
	owner := map[string]*ir.VirtualHost{} // domain -> virtual host (Envoy wants each once)
	for _, h := range hosts {
		vh := &ir.VirtualHost{Name: h}
		var merged *ir.VirtualHost
		for _, d := range Domains(h) {
			if o := owner[d]; o != nil {
				merged = o
				continue
			}
			owner[d] = vh
			vh.Domains = append(vh.Domains, d)
		}
		if len(vh.Domains) == 0 {
			// Every domain of this host belongs to another virtual host ("a:*" and "a"):
			// its routes join that one.
			merged.Routes = append(merged.Routes, byHost[h]...)
			SortRoutes(merged.Routes)
			continue
		}
		vh.Routes = byHost[h]
		SortRoutes(vh.Routes)
		out = append(out, vh)
	}
	for _, vh := range out {
		vh.Routes = dedupeRoutes(vh.Routes)
	}
	return out
}

// dedupeRoutes drops a route listed twice in one virtual host (a route naming two hosts
// that merged).
func dedupeRoutes(rs []*ir.Route) []*ir.Route {
	seen := make(map[*ir.Route]bool, len(rs))
	out := rs[:0]
	for _, r := range rs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// checkHost rejects host names Envoy would refuse as virtual host domains.
func checkHost(h string) error {
	for _, c := range h {
		// Envoy validates domains as header values (VirtualHost.domains: HTTP_HEADER_VALUE)
		// and a failing virtual host fails the whole route configuration: the route that
		// names such a host is left out instead.
		if c < 0x21 || c == 0x7f {
			return fmt.Errorf("host %q: holds a control character or a space", h)
		}
	}
	if n := strings.Count(h, "*"); n > 1 || (n == 1 && h != "*" && !strings.HasPrefix(h, "*") && !strings.HasSuffix(h, "*")) {
		return fmt.Errorf("host %q: a wildcard must be the whole host, a leading '*' or a trailing '*'", h)
	}
	return nil
}
