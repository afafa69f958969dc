package server

import (
	"reflect"
	"slices"
	"testing"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/translate"
)

// TestValidateConfigReadsKnownFields: validateConfig skips the parts of a configuration that
// equal a validated one's, knowing which fields ir.Config.Validate reads. A field added to
// ir.Config or ir.VirtualHost must be placed here (and, if Validate reads it, compared in
// validateConfig) before this passes.
func TestValidateConfigReadsKnownFields(t *testing.T) {
	for typ, want := range map[reflect.Type][]string{
		// Compared by validateConfig (Authz by calling its Validate) / not read by Validate.
		reflect.TypeFor[ir.Config](): {"Authz", "Clusters", "ControlPlane", "Listener", "OTLP", "RateLimit", "Revision",
			"RouteErrors", "RouteWarnings", "Routes", "ServiceHosts", "ServiceName", "VirtualHosts"},
		reflect.TypeFor[ir.VirtualHost](): {"Domains", "Name", "Routes"},
	} {
		var got []string
		for i := range typ.NumField() {
			got = append(got, typ.Field(i).Name)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s has fields %v, validateConfig knows %v: compare the new ones in validateConfig if ir.Config.Validate reads them", typ, got, want)
		}
	}
}

// TestValidateConfigAgreesWithValidate: validateConfig against a validated configuration
// accepts and refuses what ir.Config.Validate does, with its error.
func TestValidateConfigAgreesWithValidate(t *testing.T) {
	base, err := translate.Translate(memoModel(1, nil), translate.Options{ControlPlane: "127.0.0.1:18000"})
	if err != nil {
		t.Fatal(err)
	}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	// next copies base with new virtual hosts (same routes) and new objects for the clusters
	// edit changes (nil: an equal copy).
	next := func(edit func(i int, c *ir.Cluster)) *ir.Config {
		n := *base
		n.VirtualHosts = nil
		for _, vh := range base.VirtualHosts {
			n.VirtualHosts = append(n.VirtualHosts, &ir.VirtualHost{Name: vh.Name, Domains: vh.Domains, Routes: slices.Clone(vh.Routes)})
		}
		n.Clusters = nil
		for i, c := range base.Clusters {
			if c.RouteID == "" || edit != nil {
				cc := *c
				if edit != nil {
					edit(i, &cc)
				}
				c = &cc
			}
			n.Clusters = append(n.Clusters, c)
		}
		return &n
	}
	badRoute := next(nil)
	r := *badRoute.VirtualHosts[0].Routes[0]
	r.Timeout = -1
	badRoute.VirtualHosts[0].Routes[0] = &r
	cases := map[string]*ir.Config{
		"the same":     base,
		"equal copies": next(nil),
		"endpoints moved": next(func(i int, c *ir.Cluster) {
			if len(c.Endpoints) > 1 {
				c.Endpoints = slices.Clone(c.Endpoints[1:])
			}
		}),
		"a bad cluster": next(func(i int, c *ir.Cluster) {
			if i == 3 {
				c.LB = "fastest"
			}
		}),
		"a duplicate name": next(func(i int, c *ir.Cluster) {
			if i == 1 {
				c.Name = base.Clusters[0].Name
			}
		}),
		"a bad route": badRoute,
	}
	refused := 0
	for name, cfg := range cases {
		got, want := validateConfig(cfg, base), cfg.Validate()
		if (got == nil) != (want == nil) || (got != nil && got.Error() != want.Error()) {
			t.Errorf("%s: validateConfig says %v, Config.Validate %v", name, got, want)
		}
		if want != nil {
			refused++
		}
	}
	if refused != 3 {
		t.Fatalf("%d cases refused, want 3: the cases do not test what they name", refused)
	}
}
