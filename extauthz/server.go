package extauthz

import (
	"context"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// MetadataNamespace is where Envoy stores ext_authz dynamic metadata.
const MetadataNamespace = "envoy.filters.http.ext_authz"

// Server is envoy.service.auth.v3.Authorization over an Engine.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	engine *Engine
}

// NewServer returns the Check server.
func NewServer(e *Engine) *Server { return &Server{engine: e} }

// Register adds the Authorization service to s.
func (s *Server) Register(g *grpc.Server) { authv3.RegisterAuthorizationServer(g, s) }

// Check implements envoy.service.auth.v3.Authorization.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	r := FromCheckRequest(req)
	d := s.engine.Check(ctx, r)
	if d.memo != nil {
		// Answers are immutable once built; protobuf marshalling of a shared message is safe.
		if m := d.memo.p.Load(); m != nil && m.rp == d.memoRoute && m.key == d.memoKey {
			return m.resp.(*authv3.CheckResponse), nil
		}
		resp := Response(r, d)
		d.memo.p.Store(&memoEntry{rp: d.memoRoute, key: d.memoKey, resp: resp})
		return resp, nil
	}
	return Response(r, d), nil
}

// FromCheckRequest converts Envoy's CheckRequest into a Request.
func FromCheckRequest(req *authv3.CheckRequest) *Request {
	a := req.GetAttributes()
	h := a.GetRequest().GetHttp()
	r := &Request{Raw: req, ID: h.GetId(), Method: h.GetMethod(), Host: h.GetHost(), Scheme: h.GetScheme(),
		Headers: h.GetHeaders()}
	if len(r.Headers) == 0 && h.GetHeaderMap() != nil {
		// encode_raw_headers: values arrive as bytes; repeated headers are joined with ','.
		r.Headers = make(map[string]string, len(h.GetHeaderMap().GetHeaders()))
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			k := strings.ToLower(hv.GetKey())
			v := hv.GetValue()
			if raw := hv.GetRawValue(); len(raw) > 0 {
				v = string(raw)
			}
			if old, ok := r.Headers[k]; ok {
				v = old + "," + v
			}
			r.Headers[k] = v
		}
	}
	if r.Headers == nil {
		r.Headers = map[string]string{}
	}
	if rid := r.Headers["x-request-id"]; rid != "" {
		r.ID = rid
	}
	if r.Host == "" {
		r.Host = r.Headers[":authority"]
	}
	if r.Method == "" {
		r.Method = r.Headers[":method"]
	}
	path := h.GetPath()
	if path == "" {
		path = r.Headers[":path"]
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		r.Path, r.RawQuery = path[:i], path[i+1:]
	} else {
		r.Path = path
	}
	if ext := a.GetContextExtensions(); ext != nil {
		r.RouteID, r.HasRouteID = ext["route_id"]
		r.Tenant = ext["tenant"]
	}
	if sa := a.GetSource().GetAddress().GetSocketAddress(); sa != nil {
		if ip, err := netip.ParseAddr(sa.GetAddress()); err == nil {
			r.Source = normAddr(ip)
		}
	}
	return r
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// Response turns a decision into Envoy's CheckResponse.
func Response(r *Request, d *Decision) *authv3.CheckResponse {
	if !d.Allowed {
		body, _ := json.Marshal(errorBody{Error: errorDetail{Code: d.Reason, Message: d.Message, RequestID: r.ID}})
		hdrs := []*corev3.HeaderValueOption{hv("content-type", "application/json"), hv("cache-control", "no-store")}
		if d.Challenge != "" && (d.Status == 401 || d.Status == 403) {
			hdrs = append(hdrs, hv("www-authenticate", d.Challenge))
		}
		if d.Status == 503 || d.Status == 429 {
			hdrs = append(hdrs, hv("retry-after", strconv.Itoa(retryAfter(d.Status))))
		}
		code := codes.PermissionDenied
		if d.Status == 401 {
			code = codes.Unauthenticated
		}
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(code), Message: d.Reason},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)},
				Headers: hdrs,
				Body:    string(body),
			}},
		}
	}
	ok := &authv3.OkHttpResponse{HeadersToRemove: d.RemoveHeaders}
	for _, h := range d.SetHeaders {
		ok.Headers = append(ok.Headers, hv(h.Name, h.Value))
	}
	for _, q := range d.SetQuery {
		ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q.Name, Value: q.Value})
	}
	id := &d.Identity
	method := id.Method
	if method == "" {
		method = MethodNone
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		"auth_method": structpb.NewStringValue(method),
	}}
	if id.UserID != "" {
		md.Fields["user_id"] = structpb.NewStringValue(id.UserID)
	}
	if id.APIKeyID != "" {
		md.Fields["api_key_id"] = structpb.NewStringValue(id.APIKeyID)
	}
	if id.Tenant != "" {
		md.Fields["tenant_id"] = structpb.NewStringValue(id.Tenant)
	}
	if len(id.Scopes) > 0 {
		md.Fields["scopes"] = structpb.NewStringValue(strings.Join(id.Scopes, " "))
	}
	return &authv3.CheckResponse{
		Status:          &status.Status{Code: int32(codes.OK)},
		HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: ok},
		DynamicMetadata: md,
	}
}

func retryAfter(status int) int {
	if status == 429 {
		return 3600
	}
	return 5
}

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}
