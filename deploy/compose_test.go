package deploy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	yaml "go.yaml.in/yaml/v3"

	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/model"
)

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	dir, err := filepath.Abs("compose")
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(t.Context(), types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "docker-compose.yaml")}},
		Environment: types.Mapping{"ADMIN_TOKEN": "test-token"},
	}, func(o *loader.Options) { o.ResolvePaths = true })
	if err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	return p
}

func env(s types.ServiceConfig, k string) string {
	if v := s.Environment[k]; v != nil {
		return *v
	}
	return ""
}

func TestComposeLayout(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"gateway-1", "gateway-2", "redis", "envoy", "prometheus", "grafana", "otel-collector", "users", "orders"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	// Two replicas of this binary on the same Redis, each reachable as api-gateway.
	for _, name := range []string{"gateway-1", "gateway-2"} {
		s := p.Services[name]
		if s.Build == nil || s.Build.Dockerfile != "Dockerfile" {
			t.Errorf("%s: must build the repository's Dockerfile", name)
		} else if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
			t.Errorf("%s: build: %v", name, err)
		}
		if got := env(s, "REDIS_URL"); got != "redis://redis:6379/0" {
			t.Errorf("%s: REDIS_URL=%q", name, got)
		}
		if env(s, "ADMIN_TOKEN") != "test-token" {
			t.Errorf("%s: ADMIN_TOKEN must come from the environment", name)
		}
		if env(s, "METRICS_PORT") != "9090" || env(s, "PORT") != "8080" || env(s, "GRPC_PORT") != "18000" {
			t.Errorf("%s: ports PORT=%s METRICS_PORT=%s GRPC_PORT=%s", name, env(s, "PORT"), env(s, "METRICS_PORT"), env(s, "GRPC_PORT"))
		}
		if host, _, _ := strings.Cut(env(s, "XDS_ADVERTISE_ADDRESS"), ":"); !slices.Contains(s.Networks["gateway"].Aliases, host) {
			t.Errorf("%s: XDS_ADVERTISE_ADDRESS host %q is not a network alias of the replica", name, host)
		}
		if _, ok := s.DependsOn["redis"]; !ok {
			t.Errorf("%s: must wait for redis", name)
		}
	}
	// Redis persists with AOF.
	cmd := strings.Join(p.Services["redis"].Command, " ")
	if !strings.Contains(cmd, "--appendonly yes") || !strings.Contains(cmd, "--appendfsync everysec") {
		t.Errorf("redis command %q: want AOF with appendfsync everysec", cmd)
	}
	if p.Services["redis"].HealthCheck == nil {
		t.Error("redis needs a healthcheck (the replicas wait for it)")
	}
	// Every bind-mounted file exists: a typo in a path fails here, not at `compose up`.
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s: mount %s: %v", name, v.Target, err)
			}
		}
	}
}

// The declarative file the replicas apply at start is valid, and its routes only target
// services it registers.
func TestComposeGatewayConfig(t *testing.T) {
	data, err := os.ReadFile("compose/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs, probs := manage.ParseFile("gateway.yaml", data)
	if len(probs) > 0 {
		t.Fatalf("gateway.yaml: %v", probs)
	}
	names := map[string]bool{}
	var routes []*model.Route
	for _, o := range objs {
		switch v := o.Obj.(type) {
		case *model.Service:
			names[v.Name] = true
		case *model.Route:
			routes = append(routes, v)
		}
	}
	p := loadCompose(t)
	for _, r := range routes {
		for _, tg := range r.Targets {
			if tg.Service != "" && !names[tg.Service] {
				t.Errorf("route %s targets unregistered service %q", r.ID, tg.Service)
			}
		}
	}
	for _, o := range objs {
		if sv, ok := o.Obj.(*model.Service); ok {
			if _, ok := p.Services[sv.Host]; !ok {
				t.Errorf("service %s: host %q is not a compose service", sv.ID, sv.Host)
			}
		}
	}
}

// promConfig is the part of Prometheus's config this repository writes, decoded with
// unknown fields rejected.
type promConfig struct {
	Global struct {
		ScrapeInterval     string `yaml:"scrape_interval"`
		EvaluationInterval string `yaml:"evaluation_interval"`
	} `yaml:"global"`
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func decodeStrictYAML(t *testing.T, path string, out any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Prometheus scrapes both replicas on METRICS_PORT, Envoy's admin /stats/prometheus, and
// loads the alert rules it mounts; Grafana's datasource points at this Prometheus.
func TestComposePrometheusAndGrafana(t *testing.T) {
	p := loadCompose(t)
	var pc promConfig
	decodeStrictYAML(t, "compose/prometheus.yml", &pc)
	targets := map[string]string{} // target -> metrics path
	for _, sc := range pc.ScrapeConfigs {
		path := sc.MetricsPath
		if path == "" {
			path = "/metrics"
		}
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				targets[tg] = path
				host, _, _ := strings.Cut(tg, ":")
				if _, ok := p.Services[host]; !ok {
					t.Errorf("scrape target %s is not a compose service", tg)
				}
			}
		}
	}
	for _, name := range []string{"gateway-1", "gateway-2"} {
		tg := name + ":" + env(p.Services[name], "METRICS_PORT")
		if targets[tg] != "/metrics" {
			t.Errorf("prometheus does not scrape %s/metrics", tg)
		}
	}
	if targets["envoy:9901"] != "/stats/prometheus" {
		t.Error("prometheus does not scrape envoy:9901/stats/prometheus")
	}
	prom := p.Services["prometheus"]
	rulesMounted := false
	for _, v := range prom.Volumes {
		for _, rf := range pc.RuleFiles {
			if ok, _ := filepath.Match(rf, v.Target); ok {
				rulesMounted = true
			}
		}
	}
	if !rulesMounted {
		t.Error("no mounted file matches prometheus rule_files")
	}

	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name, Type, UID, Access, URL string
			IsDefault                    bool `yaml:"isDefault"`
		} `yaml:"datasources"`
	}
	decodeStrictYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) == 0 || !strings.HasPrefix(ds.Datasources[0].URL, "http://prometheus:9090") {
		t.Errorf("grafana datasource %+v does not point at the compose prometheus", ds.Datasources)
	}
	var provider struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name, Folder, Type string
			DisableDeletion    bool `yaml:"disableDeletion"`
			AllowUIUpdates     bool `yaml:"allowUiUpdates"`
			Options            struct {
				Path                      string `yaml:"path"`
				FoldersFromFilesStructure bool   `yaml:"foldersFromFilesStructure"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeStrictYAML(t, "grafana/provisioning/dashboards/api-gateway.yml", &provider)
	mounted := false
	for _, v := range p.Services["grafana"].Volumes {
		for _, pr := range provider.Providers {
			if v.Target == pr.Options.Path {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Error("grafana: the dashboards folder is not mounted where the provisioning provider reads")
	}
}

// The edge Envoy's bootstrap (mounted from envoy/bootstrap-edge.yaml) is a valid Envoy
// Bootstrap whose ADS cluster reaches the replicas' shared name.
func TestComposeEnvoyBootstrap(t *testing.T) {
	p := loadCompose(t)
	var src string
	for _, v := range p.Services["envoy"].Volumes {
		if v.Target == "/etc/envoy/envoy.yaml" {
			src = v.Source
		}
	}
	if src == "" {
		t.Fatal("envoy: no bootstrap mounted at /etc/envoy/envoy.yaml")
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("envoy bootstrap: %v", err)
	}
	b := parseBootstrap(t, src, data)
	hosts := xdsHosts(t, b)
	aliases := p.Services["gateway-1"].Networks["gateway"].Aliases
	for _, h := range hosts {
		name, port, _ := strings.Cut(h, ":")
		if port != "18000" || (!slices.Contains(aliases, name) && p.Services[name].Name == "") {
			t.Errorf("envoy bootstrap ADS endpoint %s does not reach the compose replicas (want api-gateway:18000)", h)
		}
	}
}
