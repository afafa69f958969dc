package envoy

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"

	"github.com/api-gateway/api-gateway/ir"
)

// rateLimit turns one IR rate limit (built by translate.RouteRateLimits, the same translation
// that generates the rate-limit service's rules) into Envoy route actions, entry by entry.
func rateLimit(rl ir.RateLimit) *routev3.RateLimit {
	out := &routev3.RateLimit{}
	for _, e := range rl.Entries {
		a := &routev3.RateLimit_Action{}
		switch e.Kind {
		case ir.RateLimitGenericKey:
			a.ActionSpecifier = &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{
				DescriptorKey: e.DescriptorKey, DescriptorValue: e.Value}}
		case ir.RateLimitRemoteAddress:
			a.ActionSpecifier = &routev3.RateLimit_Action_RemoteAddress_{RemoteAddress: &routev3.RateLimit_Action_RemoteAddress{}}
		case ir.RateLimitMetadata:
			a.ActionSpecifier = &routev3.RateLimit_Action_Metadata{Metadata: &routev3.RateLimit_Action_MetaData{
				DescriptorKey: e.DescriptorKey,
				MetadataKey: &metadatav3.MetadataKey{Key: ir.RateLimitMetadataNamespace, Path: []*metadatav3.MetadataKey_PathSegment{
					{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: e.MetadataKey}}}},
				Source: routev3.RateLimit_Action_MetaData_DYNAMIC,
			}}
		case ir.RateLimitRequestHeader:
			a.ActionSpecifier = &routev3.RateLimit_Action_RequestHeaders_{RequestHeaders: &routev3.RateLimit_Action_RequestHeaders{
				HeaderName: e.Header, DescriptorKey: e.DescriptorKey}}
		}
		out.Actions = append(out.Actions, a)
	}
	return out
}
