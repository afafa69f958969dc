// Package edge_test checks what the gateway answers at the edge for requests that are only
// safe if Envoy and the Check service agree: paths spelled to dodge a route or a policy,
// bodies larger than a buffer, checks that outlive Envoy's patience. Nothing is mocked: the
// model is translated and built into the Envoy resources the gateway serves, each request
// goes through those resources the way Envoy's code handles them (the steps cite the Envoy
// source), and the CheckRequest that results is answered by the real ext_authz server with
// the real WAF. No Envoy binary exists here; this file is the part of Envoy the tests need.
package edge_test

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/envoy"
	"github.com/api-gateway/api-gateway/extauthz"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/translate"
	"github.com/api-gateway/api-gateway/waf"
)

// edge is a gateway built from a model: the served Envoy resources and the Check server.
type edge struct {
	t        testing.TB
	hcm      *hcmv3.HttpConnectionManager
	routes   *routev3.RouteConfiguration
	authz    *extauthzv3.ExtAuthz
	check    *extauthz.Server
	reqCount int
}

// modelYAML is a model in YAML: the collections by name.
type modelYAML struct {
	Routes   []*model.Route   `json:"routes"`
	Policies []*model.Policy  `json:"policies"`
	Settings *model.Settings  `json:"settings"`
	IPRules  []*model.IPRule  `json:"ip_rules"`
	Services []*model.Service `json:"services"`
}

func newEdge(t testing.TB, doc string) *edge {
	t.Helper()
	var in modelYAML
	if err := yaml.UnmarshalStrict([]byte(doc), &in); err != nil {
		t.Fatal(err)
	}
	snap := &model.Snapshot{Revision: 1, Routes: in.Routes, Policies: in.Policies, Settings: in.Settings, IPRules: in.IPRules, Services: in.Services}
	if snap.Settings == nil {
		snap.Settings = &model.Settings{ID: model.SettingsID}
	}
	cfg, err := translate.Translate(snap, translate.Options{ListenerAddress: "0.0.0.0:10000", ControlPlane: "controlplane:18000"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RouteErrors) > 0 {
		t.Fatalf("routes left out: %v", cfg.RouteErrors)
	}
	res, err := envoy.Build(cfg, envoy.Options{Flavor: envoy.FlavorEnvoy})
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{t: t}
	for _, ms := range res.ByKind() {
		for _, m := range ms {
			if err := envoy.Validate(m); err != nil {
				t.Fatalf("served resource fails ValidateAll: %v", err)
			}
			switch m := m.(type) {
			case *listenerv3.Listener:
				e.hcm = &hcmv3.HttpConnectionManager{}
				mustUnpack(t, m.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().GetValue(), e.hcm)
			case *routev3.RouteConfiguration:
				e.routes = m
			}
		}
	}
	if e.hcm == nil || e.routes == nil {
		t.Fatal("no HTTP listener or route configuration served")
	}
	for _, f := range e.hcm.GetHttpFilters() {
		if f.GetName() == envoy.ExtAuthzFilter {
			e.authz = &extauthzv3.ExtAuthz{}
			mustUnpack(t, f.GetTypedConfig().GetValue(), e.authz)
		}
	}
	eng, err := extauthz.New(extauthz.Options{WAF: waf.NewRegistry(waf.RegistryOptions{Logger: quiet}), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	commit, err := eng.Prepare(context.Background(), snap)
	if err != nil {
		t.Fatal(err)
	}
	commit()
	e.check = extauthz.NewServer(eng)
	return e
}

func mustUnpack(t testing.TB, b []byte, m proto.Message) {
	t.Helper()
	if err := proto.Unmarshal(b, m); err != nil {
		t.Fatal(err)
	}
}

// httpReq is a request as a client sends it.
type httpReq struct {
	method  string
	path    string // the request target as sent, query included
	headers [][2]string
	body    []byte
}

// outcome is what the client gets and why.
type outcome struct {
	status   int    // the status the client sees (200: the upstream was reached)
	by       string // "envoy" (a local reply), "authz" (the Check denied), "upstream"
	route    string // the route Envoy picked ("" for none)
	location string // a redirect's Location
	checked  bool   // a Check was made
	timeout  time.Duration
	check    *authv3.CheckRequest
}

// do sends r through the served listener and routes.
func (e *edge) do(r httpReq) outcome {
	e.t.Helper()
	path, status, location := envoyNormalizedPath(e.hcm, r.path)
	if status != 0 {
		return outcome{status: status, by: "envoy", location: location}
	}
	rt := e.pickRoute(path)
	if rt == nil {
		return outcome{status: 404, by: "envoy"}
	}
	o := outcome{route: rt.GetName()}
	pr := &extauthzv3.ExtAuthzPerRoute{}
	if a := rt.GetTypedPerFilterConfig()[envoy.ExtAuthzFilter]; a != nil {
		mustUnpack(e.t, a.GetValue(), pr)
	}
	if pr.GetDisabled() {
		o.status, o.by = 200, "upstream"
		return o
	}
	cs := pr.GetCheckSettings()
	req, tooLarge := e.checkRequest(r, path, cs)
	if tooLarge {
		// allow_partial_message false: Envoy's own 413 (ext_authz.cc decodeHeaders raises the
		// decoder buffer limit to max_request_bytes; the filter manager answers 413 past it).
		o.status, o.by = 413, "envoy"
		return o
	}
	// Envoy's deadline for the call: the per-route grpc_service's timeout when the route
	// overrides the service (createPerRouteGrpcClient in ext_authz.cc), else the filter's.
	o.timeout = e.authz.GetGrpcService().GetTimeout().AsDuration()
	if g := cs.GetGrpcService(); g != nil {
		o.timeout = g.GetTimeout().AsDuration()
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	o.checked, o.check = true, req
	resp, err := e.check.Check(ctx, req)
	if err != nil {
		e.t.Fatalf("Check: %v", err)
	}
	if resp.GetStatus().GetCode() == 0 {
		o.status, o.by = 200, "upstream"
		return o
	}
	o.status, o.by = int(resp.GetDeniedResponse().GetStatus().GetCode()), "authz"
	return o
}

// pickRoute is Envoy's route match for these routes: the virtual host "*", the first
// route whose path matcher matches the path without its query
// (source/common/router/config_impl.cc, PrefixRouteEntryImpl / PathRouteEntryImpl /
// RegexRouteEntryImpl).
func (e *edge) pickRoute(path string) *routev3.Route {
	p, _, _ := strings.Cut(path, "?")
	for _, vh := range e.routes.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			m := rt.GetMatch()
			if len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 {
				e.t.Fatalf("route %s: header or query matchers are not emulated here", rt.GetName())
			}
			switch ps := m.GetPathSpecifier().(type) {
			case *routev3.RouteMatch_Prefix:
				if strings.HasPrefix(p, ps.Prefix) {
					return rt
				}
			case *routev3.RouteMatch_Path:
				if p == ps.Path {
					return rt
				}
			case *routev3.RouteMatch_SafeRegex:
				if regexp.MustCompile("^(?:" + ps.SafeRegex.GetRegex() + ")$").MatchString(p) {
					return rt
				}
			}
		}
	}
	return nil
}

// checkRequest builds the CheckRequest Envoy's ext_authz filter sends
// (CheckRequestUtils::createHttpCheck and setHttpRequest in
// source/extensions/filters/common/ext_authz/check_request_utils.cc): the request headers
// after the connection manager's changes (lower-case names, :authority, :path normalized,
// x-forwarded-proto, x-request-id), a client's own x-envoy-auth-partial-body dropped, the
// context extensions of the route, and with with_request_body the first max_request_bytes
// of the body with x-envoy-auth-partial-body saying whether it was cut. tooLarge: Envoy
// refuses the request itself (allow_partial_message false and a body over the limit).
func (e *edge) checkRequest(r httpReq, path string, cs *extauthzv3.CheckSettings) (req *authv3.CheckRequest, tooLarge bool) {
	e.reqCount++
	id := strconv.Itoa(e.reqCount)
	hdrs := map[string]string{":method": r.method, ":path": path, ":scheme": "http", ":authority": "edge.example.com",
		"x-forwarded-proto": "http", "x-request-id": "req-" + id, "user-agent": "edge-test/1.0"}
	for _, kv := range r.headers {
		k := strings.ToLower(kv[0])
		if k == "x-envoy-auth-partial-body" {
			continue
		}
		hdrs[k] = kv[1]
	}
	if len(r.body) > 0 {
		hdrs["content-length"] = strconv.Itoa(len(r.body))
	}
	h := &authv3.AttributeContext_HttpRequest{Id: id, Method: r.method, Path: path, Host: "edge.example.com",
		Scheme: "http", Size: int64(len(r.body)), Protocol: "HTTP/1.1", Headers: hdrs}
	if wb := cs.GetWithRequestBody(); wb != nil && len(r.body) > 0 {
		max := int(wb.GetMaxRequestBytes())
		if !wb.GetAllowPartialMessage() && len(r.body) > max {
			return nil, true
		}
		n := min(len(r.body), max)
		if wb.GetPackAsBytes() {
			h.RawBody = r.body[:n]
		} else {
			h.Body = string(r.body[:n])
		}
		hdrs["x-envoy-auth-partial-body"] = strconv.FormatBool(n != len(r.body))
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:            &authv3.AttributeContext_Peer{Address: sockAddr("198.51.100.7", 50000)},
		Destination:       &authv3.AttributeContext_Peer{Address: sockAddr("10.0.0.2", 10000)},
		Request:           &authv3.AttributeContext_Request{Http: h},
		ContextExtensions: cs.GetContextExtensions(),
	}}, false
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// envoyNormalizedPath is what Envoy's connection manager makes of a request target with
// the served HCM's settings, before any route or filter sees it
// (ConnectionManagerUtility::maybeNormalizePath, source/common/http/conn_manager_utility.cc):
// escaped slashes first (PathUtil::unescapeSlashes: %2F and %5C, either case; with
// UNESCAPE_AND_REDIRECT the client gets a 307 to the fully normalized path), then
// normalize_path (PathUtil::canonicalPath in source/common/http/path_utility.cc, Chromium's
// url::CanonicalizePath on the part before '?'), then merge_slashes (PathUtil::mergeSlashes).
// status is a local reply (307 with location, or 400 when the path cannot be normalized).
func envoyNormalizedPath(h *hcmv3.HttpConnectionManager, target string) (path string, status int, location string) {
	p, q, hasQuery := strings.Cut(target, "?")
	redirect := false
	switch h.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST, hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT, hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		u := escapedSlashRx.ReplaceAllStringFunc(p, func(s string) string {
			if s[2] == 'F' || s[2] == 'f' {
				return "/"
			}
			return `\`
		})
		if u != p {
			switch h.GetPathWithEscapedSlashesAction() {
			case hcmv3.HttpConnectionManager_REJECT_REQUEST:
				return "", 400, ""
			case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
				redirect = true
			}
			p = u
		}
	}
	if h.GetNormalizePath().GetValue() {
		p = canonicalPath(p)
	}
	if h.GetMergeSlashes() {
		p = multiSlashRx.ReplaceAllString(p, "/")
	}
	if hasQuery {
		p += "?" + q
	}
	if redirect {
		return "", 307, p
	}
	return p, 0, ""
}

var (
	escapedSlashRx = regexp.MustCompile(`%(2[Ff]|5[Cc])`)
	multiSlashRx   = regexp.MustCompile(`/{2,}`)
)

// canonicalPath is Chromium's path canonicalization for the characters these tests use:
// percent-escapes of unreserved characters are decoded (%61 -> a, %2e -> .), other escapes
// keep their bytes with upper-case hex, a backslash is a slash, and dot segments are
// removed (RFC 3986 5.2.4; /.. at the root stays at the root).
func canonicalPath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\':
			b.WriteByte('/')
		case c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]):
			v, _ := strconv.ParseUint(p[i+1:i+3], 16, 8)
			if d := byte(v); isUnreserved(d) {
				b.WriteByte(d)
			} else {
				b.WriteString("%" + strings.ToUpper(p[i+1:i+3]))
			}
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	segs := strings.Split(b.String(), "/")
	var out []string
	for i, s := range segs[1:] {
		last := i == len(segs)-2
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// TestEnvoyEmulationCanonicalPath pins the emulation against the cases of Envoy's own
// path_utility_test.cc (NormalizeValidPaths, NormalizeCasePath, MergeSlashes) that these
// tests rely on.
func TestEnvoyEmulationCanonicalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/xyz":            "/xyz",
		"/x/../z":         "/z",
		"/../z":           "/z",
		"/x/./z":          "/x/z",
		"/x/y/../../z":    "/z",
		"/x/.":            "/x/",
		"/x/..":           "/",
		"/%2e%2e/z":       "/z",
		"/x/%2E/z":        "/x/z",
		`/x\..\z`:         "/z",
		"/%61dmin":        "/admin",
		"/a%20b":          "/a%20b",
		"/a%2fb":          "/a%2Fb",
		"/public/..%2fx":  "/public/..%2Fx",
		"/x/.%2e/z":       "/z",
		"/app/public/x/.": "/app/public/x/",
	} {
		if got := canonicalPath(in); got != want {
			t.Errorf("canonicalPath(%q) = %q, want %q", in, got, want)
		}
	}
}

var quiet = slog.New(slog.DiscardHandler)

func kib(n int) int { return n << 10 }

func ms(d time.Duration) string { return fmt.Sprint(d.Milliseconds()) + "ms" }
