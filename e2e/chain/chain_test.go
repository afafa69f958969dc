// Package chain_test proves the parts agree through the running binary, the way Envoy would
// use them: it reads the route configuration the binary serves over ADS as an Envoy node,
// builds the Check request from the route's ext_authz context extensions, then builds the
// rate-limit descriptors from the route's served rate-limit actions (with the identity Check
// put in dynamic metadata) and calls ShouldRateLimit. If the translator's actions and the
// rate-limit service's rules drifted apart, the limit would not apply.
package chain_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	ratelimitfilterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/api-gateway/api-gateway/internal/testutil"
)

// adsFetch asks for one type over an ADS stream as an Envoy edge node and returns the
// resources of the first response (and ACKs it).
func adsFetch(t *testing.T, stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, typeURL string, names ...string) *discoveryv3.DiscoveryResponse {
	t.Helper()
	node := &corev3.Node{Id: "chain-envoy", Cluster: "edge", UserAgentName: "envoy"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	for {
		res, err := stream.Recv()
		if err != nil {
			t.Fatalf("ADS %s: %v", typeURL, err)
		}
		if res.GetTypeUrl() != typeURL {
			continue
		}
		_ = stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeURL, ResourceNames: names,
			VersionInfo: res.GetVersionInfo(), ResponseNonce: res.GetNonce()})
		return res
	}
}

func TestRouteActionsMatchRateLimitRules(t *testing.T) {
	g := testutil.StartGateway(t, testutil.GatewayOptions{})
	mustDo := func(method, path string, body, out any, want int) {
		t.Helper()
		if code, raw := g.Do(method, path, body, out); code != want {
			t.Fatalf("%s %s: %d %s", method, path, code, raw)
		}
	}
	mustDo("POST", "/api/v1/management/rate-limits", `{"id":"per-user","algorithm":"fixed_window","requests_per_unit":3,"time_unit":"1h","by":"user"}`, nil, 201)
	mustDo("POST", "/api/v1/management/routes", `{"id":"orders","conditions":[{"path_pattern":"/orders/*"}],
	  "targets":[{"host":"127.0.0.1","port":9}],"require_auth":true,"auth":{"scopes":["orders"]},
	  "rate_limit":{"policies":["per-user"]}}`, nil, 201)
	var key struct {
		Key string `json:"key"`
	}
	mustDo("POST", "/api/v1/management/api-keys", `{"name":"alice","user_id":"alice","scopes":["orders"]}`, &key, 201)

	cc, err := grpc.NewClient(g.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// The listener's HCM: its RDS name and the rate-limit filter's domain.
	lds := adsFetch(t, stream, resourcev3.ListenerType)
	var rdsName, domain string
	for _, any := range lds.GetResources() {
		var l listenerv3.Listener
		if err := any.UnmarshalTo(&l); err != nil || l.GetApiListener() != nil {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var hcm hcmv3.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
					continue
				}
				rdsName = hcm.GetRds().GetRouteConfigName()
				for _, hf := range hcm.GetHttpFilters() {
					var rl ratelimitfilterv3.RateLimit
					if hf.GetTypedConfig() != nil && hf.GetTypedConfig().UnmarshalTo(&rl) == nil && rl.GetDomain() != "" {
						domain = rl.GetDomain()
					}
				}
			}
		}
	}
	if rdsName == "" || domain == "" {
		t.Fatalf("no HCM with RDS and a rate-limit filter in %d listeners", len(lds.GetResources()))
	}

	rds := adsFetch(t, stream, resourcev3.RouteType, rdsName)
	var served *routev3.Route
	for _, any := range rds.GetResources() {
		var rc routev3.RouteConfiguration
		if err := any.UnmarshalTo(&rc); err != nil {
			t.Fatal(err)
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetName() == "orders" {
					served = r
				}
			}
		}
	}
	if served == nil {
		t.Fatal("route orders is not served")
	}
	var perRoute extauthzv3.ExtAuthzPerRoute
	if err := served.GetTypedPerFilterConfig()["envoy.filters.http.ext_authz"].UnmarshalTo(&perRoute); err != nil {
		t.Fatalf("ext_authz per-route config: %v", err)
	}
	ext := perRoute.GetCheckSettings().GetContextExtensions()
	if ext["route_id"] != "orders" || perRoute.GetDisabled() {
		t.Fatalf("ext_authz per-route config %v", &perRoute)
	}

	// Check, as Envoy sends it for GET /orders/1 with the key.
	authz := authv3.NewAuthorizationClient(cc)
	check := func(apiKey string) *authv3.CheckResponse {
		t.Helper()
		res, err := authz.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source:      &authv3.AttributeContext_Peer{Address: sockAddr("203.0.113.7", 51000)},
			Destination: &authv3.AttributeContext_Peer{Address: sockAddr("10.0.0.1", 10000)},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id: "req-1", Method: "GET", Path: "/orders/1", Host: "shop.example", Scheme: "http", Protocol: "HTTP/1.1",
				Headers: map[string]string{":authority": "shop.example", ":method": "GET", ":path": "/orders/1", ":scheme": "http", "x-api-key": apiKey},
			}},
			ContextExtensions: ext,
		}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := check("agw_wrong_key"); res.GetStatus().GetCode() == int32(code.Code_OK) {
		t.Fatal("a wrong key was allowed")
	}
	res := check(key.Key)
	if res.GetStatus().GetCode() != int32(code.Code_OK) {
		t.Fatalf("Check denied the valid key: %v", res)
	}
	// Envoy stores the Check response's dynamic metadata under the ext_authz filter's name.
	meta := &structpb.Struct{Fields: map[string]*structpb.Value{
		"envoy.filters.http.ext_authz": structpb.NewStructValue(res.GetDynamicMetadata())}}

	// Envoy's descriptor generation from the served actions (all must produce an entry,
	// or that descriptor is not sent).
	var descriptors []*rlcommon.RateLimitDescriptor
	for _, rl := range served.GetRoute().GetRateLimits() {
		d := &rlcommon.RateLimitDescriptor{}
		complete := true
		for _, a := range rl.GetActions() {
			switch x := a.GetActionSpecifier().(type) {
			case *routev3.RateLimit_Action_GenericKey_:
				key := x.GenericKey.GetDescriptorKey()
				if key == "" {
					key = "generic_key"
				}
				d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: key, Value: x.GenericKey.GetDescriptorValue()})
			case *routev3.RateLimit_Action_RemoteAddress_:
				d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: "remote_address", Value: "203.0.113.7"})
			case *routev3.RateLimit_Action_Metadata:
				v := metaValue(meta, x.Metadata.GetMetadataKey().GetKey(), x.Metadata.GetMetadataKey().GetPath())
				if v == "" {
					complete = false
					break
				}
				d.Entries = append(d.Entries, &rlcommon.RateLimitDescriptor_Entry{Key: x.Metadata.GetDescriptorKey(), Value: v})
			default:
				t.Fatalf("action %T not expected on this route", x)
			}
		}
		if complete {
			descriptors = append(descriptors, d)
		}
	}
	if len(descriptors) == 0 {
		t.Fatalf("no descriptor generated from %v", served.GetRoute().GetRateLimits())
	}
	rls := rlsv3.NewRateLimitServiceClient(cc)
	for i := 1; i <= 4; i++ {
		rr, err := rls.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: domain, Descriptors: descriptors, HitsAddend: 1})
		if err != nil {
			t.Fatal(err)
		}
		want := rlsv3.RateLimitResponse_OK
		if i == 4 {
			want = rlsv3.RateLimitResponse_OVER_LIMIT
		}
		if rr.GetOverallCode() != want {
			t.Fatalf("call %d with %v: %v, want %v (statuses %v)", i, descriptors, rr.GetOverallCode(), want, rr.GetStatuses())
		}
		if i == 3 && rr.GetStatuses()[0].GetLimitRemaining() != 0 {
			t.Fatalf("remaining after 3 of 3: %v", rr.GetStatuses())
		}
	}
}

func sockAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// metaValue reads a string from dynamic metadata the way Envoy's metadata action does.
func metaValue(meta *structpb.Struct, ns string, path []*metadatav3.MetadataKey_PathSegment) string {
	v, ok := meta.GetFields()[ns]
	if !ok {
		return ""
	}
	cur := v
	for _, seg := range path {
		s := cur.GetStructValue()
		if s == nil {
			return ""
		}
		cur, ok = s.GetFields()[seg.GetKey()]
		if !ok {
			return ""
		}
	}
	switch k := cur.GetKind().(type) {
	case *structpb.Value_StringValue:
		return k.StringValue
	case *structpb.Value_NumberValue:
		return fmt.Sprint(k.NumberValue)
	}
	return ""
}
