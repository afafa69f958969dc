package envoy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	statefulv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	cookiev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/internal/golden"
	"github.com/api-gateway/api-gateway/translate"
)

// Envoy's own list of its extensions (source/extensions/extensions_metadata.yaml, copied
// byte for byte; testdata/envoy-extensions/README.md names the commit) is the oracle for
// every google.protobuf.Any the gateway emits: the type must be an extension Envoy builds,
// stable, and fit for an edge that faces untrusted clients, unless the README says why not.
const oraclePath = "testdata/envoy-extensions/extensions_metadata.yaml"

// extensionMeta is one entry of Envoy's extension list.
type extensionMeta struct {
	Categories      []string `json:"categories"`
	SecurityPosture string   `json:"security_posture"`
	Status          string   `json:"status"`
	TypeURLs        []string `json:"type_urls"`
	StatusUpstream  string   `json:"status_upstream"`
	Undocumented    bool     `json:"undocumented"`
}

// oracleEntry is what the oracle says of one type URL.
type oracleEntry struct {
	Extension string
	extensionMeta
}

// coreTypes are type URLs the gateway may emit inside an Any that are not extensions, so
// Envoy's list does not name them, each with the extension entry (no type_urls of its own
// there) that stands for it. Keep this tiny: anything else must be in the oracle.
var coreTypes = map[string]string{
	// typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]:
	// the upstream HTTP protocol options, listed by Envoy as the extension
	// envoy.upstreams.http.http_protocol_options without a type_urls entry.
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": "envoy.upstreams.http.http_protocol_options",
}

// readmeExceptions: a type URL whose status is not stable, or whose security posture is not
// robust to an untrusted downstream, is emitted only because the README explains it; the
// phrase must stay in README.md (the test fails if the README stops saying it).
type readmeException struct {
	statusPhrase  string // README phrase naming the feature experimental (status not stable)
	posturePhrase string // README phrase explaining the posture (not robust_to_untrusted_downstream…)
}

var readmeExceptions = map[string]readmeException{
	"envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute": {
		posturePhrase: "Envoy lists `envoy.filters.http.stateful_session` as `requires_trusted_downstream_and_upstream`",
	},
	"envoy.extensions.filters.http.stateful_session.v3.StatefulSession": {
		posturePhrase: "Envoy lists `envoy.filters.http.stateful_session` as `requires_trusted_downstream_and_upstream`",
	},
	"envoy.config.trace.v3.OpenTelemetryConfig": {
		statusPhrase:  "tracing through Envoy (on only with `OTEL_EXPORTER_OTLP_ENDPOINT`) is experimental",
		posturePhrase: "Envoy continues a client's `traceparent`, so a client can choose its trace ids",
	},
	"envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": {
		posturePhrase: "reads only Envoy's own count of active requests per host",
	},
	"envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState": {
		statusPhrase:  "the cookie session state (`envoy.http.stateful_session.cookie`) is `alpha` in Envoy's list",
		posturePhrase: "its security posture there is `unknown`",
	},
}

func loadOracle(t testing.TB) map[string]oracleEntry {
	t.Helper()
	raw, err := os.ReadFile(oraclePath)
	if err != nil {
		t.Fatal(err)
	}
	var exts map[string]extensionMeta
	if err := yaml.UnmarshalStrict(raw, &exts); err != nil {
		t.Fatalf("%s: %v", oraclePath, err)
	}
	if len(exts) < 100 {
		t.Fatalf("%s lists %d extensions: not Envoy's list", oraclePath, len(exts))
	}
	out := map[string]oracleEntry{}
	for name, m := range exts {
		for _, u := range m.TypeURLs {
			out[u] = oracleEntry{Extension: name, extensionMeta: m}
		}
	}
	for u, name := range coreTypes {
		m, ok := exts[name]
		if !ok {
			t.Fatalf("core type %s stands for %s, which Envoy's list does not have", u, name)
		}
		if _, dup := out[u]; dup {
			t.Fatalf("core type %s is in Envoy's list: drop it from coreTypes", u)
		}
		out[u] = oracleEntry{Extension: name, extensionMeta: m}
	}
	return out
}

// anyTypes walks m recursively and records the type URL of every google.protobuf.Any in it,
// with the field path where it was found. An Any whose type is known is unpacked and walked
// too (a filter's typed_config holding a TypedExtensionConfig, and so on).
func anyTypes(m proto.Message, where string, out map[string][]string) {
	walkAny(m.ProtoReflect(), where, out)
}

func walkAny(m protoreflect.Message, path string, out map[string][]string) {
	if !m.IsValid() {
		return
	}
	if m.Descriptor().FullName() == "google.protobuf.Any" {
		a := m.Interface().(*anypb.Any)
		u := strings.TrimPrefix(a.GetTypeUrl(), "type.googleapis.com/")
		out[u] = append(out[u], path)
		inner, err := a.UnmarshalNew()
		if err != nil {
			// Unknown to this binary: still recorded above, so the oracle judges it.
			return
		}
		walkAny(inner.ProtoReflect(), path+"<"+u+">", out)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walkAny(l.Get(i).Message(), fmt.Sprintf("%s[%d]", p, i), out)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				walkAny(mv.Message(), fmt.Sprintf("%s[%s]", p, k.String()), out)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			walkAny(v.Message(), p, out)
		}
		return true
	})
}

func isRobust(posture string) bool {
	return posture == "robust_to_untrusted_downstream" || posture == "robust_to_untrusted_downstream_and_upstream"
}

// judge returns every problem the oracle finds with the emitted type URLs.
func judge(oracle map[string]oracleEntry, readme string, emitted map[string][]string) []string {
	var problems []string
	urls := make([]string, 0, len(emitted))
	for u := range emitted {
		urls = append(urls, u)
	}
	sort.Strings(urls)
	for _, u := range urls {
		at := emitted[u][0]
		e, ok := oracle[u]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s (at %s) is not an extension in Envoy's list %s", u, at, oraclePath))
			continue
		}
		ex := readmeExceptions[u]
		if e.Status != "stable" {
			switch {
			case ex.statusPhrase == "":
				problems = append(problems, fmt.Sprintf("%s (%s, at %s) has status %q: the README must call the feature experimental (add it to readmeExceptions)", u, e.Extension, at, e.Status))
			case !strings.Contains(readme, ex.statusPhrase):
				problems = append(problems, fmt.Sprintf("%s (%s) has status %q and README.md no longer says %q", u, e.Extension, e.Status, ex.statusPhrase))
			}
		}
		if !isRobust(e.SecurityPosture) {
			switch {
			case ex.posturePhrase == "":
				problems = append(problems, fmt.Sprintf("%s (%s, at %s) has security_posture %q: the README must say why it is at the edge (add it to readmeExceptions)", u, e.Extension, at, e.SecurityPosture))
			case !strings.Contains(readme, ex.posturePhrase):
				problems = append(problems, fmt.Sprintf("%s (%s) has security_posture %q and README.md no longer says %q", u, e.Extension, e.SecurityPosture, ex.posturePhrase))
			}
		}
	}
	return problems
}

func readREADME(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Markdown wraps lines: compare with runs of white space folded to one space.
	return strings.Join(strings.Fields(string(raw)), " ")
}

// emittedTypes builds every golden case in both flavors and every bootstrap example, and
// collects the type URLs of every Any in them.
func emittedTypes(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	files, _ := filepath.Glob("testdata/in/*.yaml")
	if len(files) < 10 {
		t.Fatalf("expected the golden cases, found %d", len(files))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".yaml")
		snap, opts := golden.Load(t, f)
		cfg, err := translate.Translate(snap, opts)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, fl := range []struct {
			key    string
			flavor envoy.Flavor
		}{{"envoy", envoy.FlavorEnvoy}, {"grpc", envoy.FlavorGRPC}} {
			res, err := envoy.Build(cfg, envoy.Options{Flavor: fl.flavor})
			if err != nil {
				t.Fatalf("%s/%s: %v", name, fl.key, err)
			}
			for _, m := range allResources(res) {
				anyTypes(m, name+"/"+fl.key+":"+string(m.ProtoReflect().Descriptor().Name()), out)
			}
		}
	}
	if len(examples) < 3 {
		t.Fatalf("expected the edge, sidecar and mTLS bootstrap examples, found %d", len(examples))
	}
	for file, o := range examples {
		bs, err := envoy.Bootstrap(o)
		if err != nil {
			t.Fatal(err)
		}
		anyTypes(bs, file, out)
	}
	return out
}

// TestEmittedExtensionsAreInEnvoysList is the oracle test: every Any type URL the gateway
// emits is a stable Envoy extension fit for an untrusted downstream, or the README says why.
func TestEmittedExtensionsAreInEnvoysList(t *testing.T) {
	oracle := loadOracle(t)
	readme := readREADME(t)
	emitted := emittedTypes(t)
	// The walk must reach the nested Anys: the HTTP connection manager inside the listener,
	// the router inside it, the cookie state inside the per-route stateful_session.
	for _, must := range []string{
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"envoy.extensions.filters.http.router.v3.Router",
		"envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState",
		"envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	} {
		if _, ok := emitted[must]; !ok {
			t.Errorf("the walk did not find %s: it no longer reaches every Any", must)
		}
	}
	for _, p := range judge(oracle, readme, emitted) {
		t.Error(p)
	}
	// Exceptions for types no longer emitted are stale: drop them with their README text.
	for u := range readmeExceptions {
		if _, ok := emitted[u]; !ok {
			t.Errorf("readmeExceptions has %s, which the gateway no longer emits", u)
		}
	}
	if testing.Verbose() {
		urls := make([]string, 0, len(emitted))
		for u := range emitted {
			urls = append(urls, u)
		}
		sort.Strings(urls)
		for _, u := range urls {
			e := oracle[u]
			t.Logf("%s\t%s\t%s\t%s", u, e.Extension, e.Status, e.SecurityPosture)
		}
	}
}

// TestOracleRefusesATypeOutsideEnvoysList proves the walker and the judge on hand-made
// messages: an Any with a type Envoy does not list (nested where a filter's config would
// be) is found and refused; a non-robust type without a README exception is refused; the
// README exception is honoured only while the README holds its phrase.
func TestOracleRefusesATypeOutsideEnvoysList(t *testing.T) {
	oracle := loadOracle(t)
	readme := readREADME(t)

	const fake = "example.gateway.v1.NotAnEnvoyExtension"
	cl := &clusterv3.Cluster{
		Name: "c",
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"x": {TypeUrl: "type.googleapis.com/" + fake, Value: []byte{1, 2, 3}},
		},
	}
	emitted := map[string][]string{}
	anyTypes(cl, "cluster", emitted)
	if got := emitted[fake]; len(got) != 1 || got[0] != "cluster.typed_extension_protocol_options[x]" {
		t.Fatalf("walker found %v for the fake type", emitted)
	}
	problems := judge(oracle, readme, emitted)
	if len(problems) != 1 || !strings.Contains(problems[0], fake) || !strings.Contains(problems[0], "not an extension") {
		t.Fatalf("judge = %q, want the fake type refused", problems)
	}

	// A nested Any (the cookie state inside the per-route stateful_session inside a route's
	// typed_per_filter_config) is found at its path.
	cookie, err := anypb.New(&cookiev3.CookieBasedSessionState{})
	if err != nil {
		t.Fatal(err)
	}
	per, err := anypb.New(&statefulv3.StatefulSessionPerRoute{Override: &statefulv3.StatefulSessionPerRoute_StatefulSession{
		StatefulSession: &statefulv3.StatefulSession{SessionState: &corev3.TypedExtensionConfig{Name: "cookie", TypedConfig: cookie}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	rc := &routev3.RouteConfiguration{VirtualHosts: []*routev3.VirtualHost{{Routes: []*routev3.Route{{
		TypedPerFilterConfig: map[string]*anypb.Any{envoy.StatefulFilter: per},
	}}}}}
	emitted = map[string][]string{}
	anyTypes(rc, "rc", emitted)
	const cookieURL = "envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState"
	if len(emitted[cookieURL]) != 1 || !strings.Contains(emitted[cookieURL][0], "session_state.typed_config") {
		t.Fatalf("walker did not reach the nested cookie state: %v", emitted)
	}
	if p := judge(oracle, readme, emitted); len(p) != 0 {
		t.Fatalf("with the README's explanations the sticky session types pass, got %q", p)
	}
	// Without the README's words the same types are refused, status and posture both.
	if p := judge(oracle, "", emitted); len(p) != 3 {
		t.Fatalf("without the README the stateful_session posture and the cookie's status and posture must be refused, got %q", p)
	}

	// A listed but non-robust type without an exception is refused (Envoy's tap filter).
	tap := map[string][]string{"envoy.extensions.filters.http.tap.v3.Tap": {"x"}}
	if p := judge(oracle, readme, tap); len(p) != 2 {
		t.Fatalf("tap (alpha, requires_trusted_downstream_and_upstream) must be refused twice, got %q", p)
	}
}
