package ir

import (
	"strings"
	"testing"
	"time"
)

func validConfig() *Config {
	return &Config{
		Listener:     Listener{Name: "http", Address: "0.0.0.0", Port: 10000},
		ControlPlane: Address{Host: "cp", Port: 18000},
		Clusters: []*Cluster{{Name: "r/0", RouteID: "r", Discovery: DiscoveryEDS, LB: LBRoundRobin,
			Endpoints: []Endpoint{{Host: "10.0.0.1", Port: 80, Weight: 1}}}},
		VirtualHosts: []*VirtualHost{{Name: "*", Domains: []string{"*"}, Routes: []*Route{{
			Name: "r", RouteID: "r", Match: Match{PathKind: PathPrefix, Path: "/"}, Backends: []Backend{{Cluster: "r/0", Weight: 1}},
		}}}},
	}
}

func TestConfigValidate(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(c *Config){
		"does not exist":  func(c *Config) { c.VirtualHosts[0].Routes[0].Backends[0].Cluster = "nope" },
		"duplicate name":  func(c *Config) { c.Clusters = append(c.Clusters, c.Clusters[0]) },
		"non-zero weight": func(c *Config) { c.VirtualHosts[0].Routes[0].Backends[0].Weight = 0 },
		"used twice": func(c *Config) {
			c.VirtualHosts = append(c.VirtualHosts, &VirtualHost{Name: "b", Domains: []string{"*"}})
		},
		"must be IP addresses": func(c *Config) { c.Clusters[0].Endpoints[0].Host = "db.local" },
		"needs a prefix match": func(c *Config) {
			r := c.VirtualHosts[0].Routes[0]
			r.Match.PathKind = PathExact
			r.PrefixRewrite = "/x"
		},
		"must carry the route":   func(c *Config) { c.VirtualHosts[0].Routes[0].Authz = Authz{Enabled: true} },
		"interval and a timeout": func(c *Config) { c.Clusters[0].HealthCheck = &HealthCheck{Path: "/h", Interval: time.Second} },
		"methods must be sorted": func(c *Config) { c.VirtualHosts[0].Routes[0].Match.Methods = []string{"POST", "GET"} },
		"is not an IP address":   func(c *Config) { c.Listener.Address = "localhost" },
	}
	for want, mutate := range cases {
		c := validConfig()
		mutate(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v", want, err)
		}
	}
}
