package extauthz

import (
	"flag"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
)

var update = flag.Bool("update", false, "rewrite testdata/tables from the current build")

// TestGoldenTables compiles the IR of every shared golden model (envoy/testdata/in) into
// ext_authz tables and compares a dump of them with testdata/tables
// (go test ./extauthz -run TestGoldenTables -update rewrites them). WAFs are not compiled
// here (their handles are the waf package's); the IR golden shows each route's WAF.
func TestGoldenTables(t *testing.T) {
	golden.Each(t, func(t *testing.T, name string, snap *model.Snapshot, cfg *ir.Config) {
		e, err := New(Options{Logger: quietLogger(), Clock: func() time.Time { return golden.Now }})
		if err != nil {
			t.Fatal(err)
		}
		res, err := e.buildIR(cfg, snap)
		if err != nil {
			t.Fatal(err)
		}
		golden.Compare(t, filepath.Join("testdata", "tables", name+".yaml"), dumpTables(res.t), *update, "go test ./extauthz -run TestGoldenTables -update")
	})
}

type tablesDump struct {
	Revision        uint64
	IdentityHeaders map[string]string
	KeepCredentials bool
	TrustedHops     int
	MaxTokenBytes   int
	GlobalIP        ipDump
	Default         routeDump
	Routes          map[string]routeDump
	Keys            []string
	Tenants         []string
	Issuers         []string
}

type ipDump struct{ Deny, Allow [][]string }

type routeDump struct {
	Tenant, TenantHeader              string
	RequireAuth, FailOpen, DryRun     bool
	Methods                           []string
	Scopes, Roles, Audiences, Issuers []string
	Claims                            []string
	IP                                ipDump
	GeoAllow, GeoDeny                 []string
	Policies                          []string
	WAF, WAFInvalid                   bool
	CELRoute                          map[string]any
}

func dumpTables(t *tables) tablesDump {
	d := tablesDump{Revision: t.rev, KeepCredentials: t.keepCreds, TrustedHops: t.trustedHops, MaxTokenBytes: t.maxToken,
		IdentityHeaders: map[string]string{"user_id": t.hdrUser, "tenant_id": t.hdrTenant, "api_key_id": t.hdrKey, "scopes": t.hdrScopes},
		Routes:          map[string]routeDump{}, Default: dumpRoute(t.def)}
	if g := t.def.ip.global; g != nil {
		d.GlobalIP = dumpIP(g.deny, g.allow)
	}
	for id, rp := range t.routes {
		d.Routes[id] = dumpRoute(rp)
	}
	for id := range t.keys {
		d.Keys = append(d.Keys, id)
	}
	for id := range t.tenants {
		d.Tenants = append(d.Tenants, id)
	}
	for id := range t.issuers {
		d.Issuers = append(d.Issuers, id)
	}
	sort.Strings(d.Keys)
	sort.Strings(d.Tenants)
	sort.Strings(d.Issuers)
	return d
}

func dumpRoute(rp *routePolicy) routeDump {
	r := routeDump{Tenant: rp.tenant, TenantHeader: rp.tenantHeader, RequireAuth: rp.requireAuth, FailOpen: rp.failOpen,
		DryRun: rp.dryRun, Scopes: rp.scopes, Roles: rp.roles, Audiences: rp.audiences, IP: dumpIP(rp.ip.deny, rp.ip.allow),
		GeoAllow: keys(rp.geo.allow), GeoDeny: keys(rp.geo.deny), WAF: rp.waf != nil, WAFInvalid: rp.wafInvalid, CELRoute: rp.celRoute}
	for _, m := range []struct {
		bit  uint8
		name string
	}{{allowJWT, "jwt"}, {allowAPIKey, "api_key"}, {allowIntrospection, "introspection"}} {
		if rp.methods&m.bit != 0 {
			r.Methods = append(r.Methods, m.name)
		}
	}
	r.Issuers = keys(rp.issuers)
	for _, c := range rp.claims {
		r.Claims = append(r.Claims, c.claim+" -> "+c.header)
	}
	for _, p := range rp.policies {
		for _, rule := range p.rules {
			verb := "allow"
			if rule.deny {
				verb = "deny"
			}
			r.Policies = append(r.Policies, p.id+"/"+rule.name+": "+verb)
		}
	}
	return r
}

func dumpIP(deny, allow []*ipSet) ipDump {
	var d ipDump
	for _, s := range deny {
		d.Deny = append(d.Deny, s.entries())
	}
	for _, s := range allow {
		d.Allow = append(d.Allow, s.entries())
	}
	return d
}

// entries lists a set's entries, each with its expiry, sorted.
func (s *ipSet) entries() []string {
	var out []string
	add := func(e string, exp time.Time) {
		if !exp.IsZero() {
			e += " until " + exp.UTC().Format(time.RFC3339)
		}
		out = append(out, e)
	}
	for a, exp := range s.addrs {
		add(a.String(), exp)
	}
	for _, p := range s.prefixes {
		add(p.p.String(), p.exp)
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
