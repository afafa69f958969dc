package ratelimit

// Caps on what one ShouldRateLimit request may ask. A request past any of them is refused
// with gRPC InvalidArgument before anything is counted: the work and the state one request can
// cause stay bounded, so one request can never slow down or change the answers of another.
const (
	// MaxDescriptors is the most descriptors one request may carry. Envoy sends one per
	// rate_limits action list that matched on the route (a handful in practice).
	MaxDescriptors = 64
	// MaxDescriptorEntries is the most entries one descriptor may carry (one per action of
	// one rate_limits entry; real configurations use one to five).
	MaxDescriptorEntries = 32
	// MaxHitsAddend is the largest cost a request may ask: the range of the request-level
	// hits_addend field (uint32), which a per-descriptor hits_addend (uint64) may not exceed.
	MaxHitsAddend = 1<<32 - 1
)
