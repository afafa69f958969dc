package envoy

// Envoy's run-time rules: what Envoy (or grpc-go) refuses when it loads a resource although
// the resource passes its proto validation (ValidateAll). All routes share one
// RouteConfiguration, so one such route would make Envoy NACK every later route change and
// leave a fresh Envoy with no routes at all. Build runs these checks on every route and
// cluster it emits, right after ValidateAll, and drops an offending route into
// Resources.RouteErrors with the reason; since Build also runs on every API write
// (xds/server ValidateRoute), such a route is refused on write and never served.
//
// Each rule names the Envoy source file and function it mirrors. The rules are written
// against the fields our builders emit (routes.go, clusters.go, httpfilters.go,
// listener.go); a builder that starts emitting a new field should add its rule here.

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/api-gateway/api-gateway/ir"
)

// packedAny is an Any a builder packed and the message it packed: the walk reads the
// message instead of unmarshalling the Any again (the Any holds its deterministic encoding;
// builders never change a message after packing it).
type packedAny struct {
	a *anypb.Any
	m proto.Message
}

// checkRouteRuntime applies Envoy's run-time rules to one built route; packed are the Anys
// its builder packed.
func checkRouteRuntime(r *routev3.Route, packed []packedAny) error {
	var errs []error
	errs = append(errs, checkHeaderMutations("request", r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove()))
	errs = append(errs, checkHeaderMutations("response", r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove()))
	if ra := r.GetRoute(); ra != nil {
		errs = append(errs, checkWeightedClusters(ra.GetWeightedClusters()), checkRetryBackOff(ra.GetRetryPolicy()), checkMirrorPolicies(ra.GetRequestMirrorPolicies()))
	}
	errs = append(errs, checkDirectResponseBody(r.GetDirectResponse()))
	errs = append(errs, walkRuntime(r.ProtoReflect(), 0, packed))
	return errors.Join(errs...)
}

// Direct response bodies.
//
// source/common/router/config_utility.cc, ConfigUtility::parseDirectResponseBody (with
// Config::DataSource::read): a direct response body above the route configuration's
// max_direct_response_body_size_bytes, 4096 when unset (config_impl.cc
// DEFAULT_MAX_DIRECT_RESPONSE_BODY_SIZE_BYTES; the gateway leaves it unset), is refused
// ("response body size is N bytes; maximum is 4096"), and with it the whole route
// configuration.
func checkDirectResponseBody(d *routev3.DirectResponseAction) error {
	if d == nil {
		return nil
	}
	body := d.GetBody().GetInlineString()
	if b := d.GetBody().GetInlineBytes(); len(b) > 0 {
		body = string(b)
	}
	if len(body) > ir.MaxDirectResponseBody {
		return fmt.Errorf("direct_response: response body size is %d bytes; maximum is %d", len(body), ir.MaxDirectResponseBody)
	}
	return nil
}

// checkMirrorPolicies mirrors source/common/router/config_impl.cc, ShadowPolicyImpl's
// constructor: a request mirror policy names exactly one of cluster and cluster_header
// (both or neither: "Exactly one of cluster or cluster_header in request mirror policy need
// to be specified"), which the proto's validation does not say.
func checkMirrorPolicies(ps []*routev3.RouteAction_RequestMirrorPolicy) error {
	for i, p := range ps {
		if (p.GetCluster() == "") == (p.GetClusterHeader() == "") {
			return fmt.Errorf("request_mirror_policies[%d]: exactly one of cluster and cluster_header must be set", i)
		}
	}
	return nil
}

// checkClusterRuntime applies Envoy's run-time rules to one built cluster.
func checkClusterRuntime(c *clusterv3.Cluster, packed []packedAny) error {
	errs := []error{checkOutlierEjection(c.GetOutlierDetection()), checkLoadBalancingPolicy(c), checkUpstreamTLS(c, packed), walkRuntime(c.ProtoReflect(), 0, packed)}
	if la := c.GetLoadAssignment(); la != nil {
		errs = append(errs, checkLoadAssignment(la))
	}
	for _, hc := range c.GetHealthChecks() {
		errs = append(errs, checkExpectedStatuses(hc.GetHttpHealthCheck().GetExpectedStatuses()))
	}
	return errors.Join(errs...)
}

// Upstream TLS.
//
// What Envoy refuses when it creates a cluster's TLS context:
//   - source/common/tls/cert_validator/default_validator.cc, parseCaCertList (from
//     DefaultCertValidator::initializeSslContexts): a trusted_ca that BoringSSL's
//     PEM_X509_INFO_read_bio cannot read (a damaged PEM block, a CERTIFICATE block that is
//     no X.509 certificate) or that holds no certificate: "Failed to load trusted CA
//     certificates from <inline>";
//   - the same function: auto_sni_san_validation without a trusted CA ("'auto_sni_san_validation'
//     was configured without configuring a trusted CA");
//   - source/common/ssl/certificate_validation_context_config_impl.cc,
//     CertificateValidationContextConfigImpl: SAN matchers without a trusted CA ("SAN-based
//     verification of peer certificates without trusted CA is insecure and not allowed").
//
// An exact SAN matcher with an empty value, or a DNS SAN holding a NUL, is no refusal of
// Envoy's, but it matches no certificate (a DNS name holds no NUL: Utility::dnsNameMatch
// compares the certificate's IA5String): the cluster could never connect, so it is refused
// here too. A trusted_ca file is read on Envoy's machine, out of reach of this check.
func checkUpstreamTLS(c *clusterv3.Cluster, packed []packedAny) error {
	ts := c.GetTransportSocket()
	if ts == nil {
		return nil
	}
	var ctx *tlsv3.UpstreamTlsContext
	for _, p := range packed {
		if p.a == ts.GetTypedConfig() {
			ctx, _ = p.m.(*tlsv3.UpstreamTlsContext)
		}
	}
	if ctx == nil {
		ctx = &tlsv3.UpstreamTlsContext{}
		if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
			return fmt.Errorf("transport socket: %w", err)
		}
	}
	vc := ctx.GetCommonTlsContext().GetValidationContext()
	ca := vc.GetTrustedCa()
	hasCA := ca.GetFilename() != "" || ca.GetInlineString() != "" || len(ca.GetInlineBytes()) > 0
	if inline := ca.GetInlineString(); inline != "" {
		if err := checkInlineCA(inline); err != nil {
			return fmt.Errorf("upstream TLS trusted_ca: %w", err)
		}
	}
	if ctx.GetAutoSniSanValidation() && !hasCA {
		return errors.New("upstream TLS: auto_sni_san_validation without a trusted CA: Envoy refuses it")
	}
	if len(vc.GetMatchTypedSubjectAltNames()) > 0 && !hasCA {
		return errors.New("upstream TLS: SAN matchers without a trusted CA: Envoy refuses them as insecure")
	}
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		v := m.GetMatcher().GetExact()
		if v == "" || strings.ContainsRune(v, 0) {
			return fmt.Errorf("upstream TLS: SAN matcher %q matches no certificate", v)
		}
		if m.GetSanType() == tlsv3.SubjectAltNameMatcher_IP_ADDRESS && net.ParseIP(v) == nil {
			return fmt.Errorf("upstream TLS: IP SAN matcher %q is not an IP address and matches no certificate", v)
		}
	}
	return nil
}

// checkInlineCA reads a PEM bundle as BoringSSL's PEM_X509_INFO_read_bio does for Envoy:
// every block must decode, every certificate block must parse, and one at least must be a
// certificate (other blocks are skipped).
func checkInlineCA(s string) error {
	rest := []byte(s)
	begins := bytes.Count(rest, []byte("-----BEGIN "))
	blocks, certs := 0, 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		blocks++
		switch b.Type {
		case "TRUSTED CERTIFICATE":
			certs++ // a certificate followed by OpenSSL's trust settings (d2i_X509_AUX)
		case "CERTIFICATE", "X509 CERTIFICATE":
			if _, err := x509.ParseCertificate(b.Bytes); err != nil {
				return fmt.Errorf("a certificate block does not parse (%v): Envoy fails to load the trusted CA certificates", err)
			}
			certs++
		}
	}
	if blocks != begins {
		return errors.New("a PEM block does not decode: Envoy fails to load the trusted CA certificates")
	}
	if certs == 0 {
		return errors.New("holds no certificate: Envoy fails to load the trusted CA certificates")
	}
	return nil
}

// Endpoint weights.
//
// source/extensions/load_balancing_policies/common/thread_aware_lb_impl.cc
// (normalizeHostWeights, which the ring hash and Maglev policies build their tables with):
// the weights of the hosts of one locality are summed in 64 bits and a sum above 2^32-1
// fails with "The sum of weights of all upstream hosts in a locality exceeds 4294967295".
// grpc-go refuses the same in every load assignment, and also a zero weight and two
// endpoints of one address (internal/xds/xdsclient/xdsresource/unmarshal_eds.go,
// parseEndpoints: "sum of weights of endpoints in the same locality exceeds maximum value",
// "duplicate endpoint with the same address"), and grpc-js refuses a repeated address too
// (xds-resource-type/endpoint-resource-type.js: "address is a duplicate of another
// address"). Both compare the address and port as written, across the whole assignment;
// the gateway sends one locality.
func checkLoadAssignment(cla *endpointv3.ClusterLoadAssignment) error {
	for _, loc := range cla.GetEndpoints() {
		var sum uint64
		seen := make(map[string]bool, len(loc.GetLbEndpoints()))
		for _, e := range loc.GetLbEndpoints() {
			w := uint64(1) // an unset weight counts as 1
			if e.GetLoadBalancingWeight() != nil {
				w = uint64(e.GetLoadBalancingWeight().GetValue())
			}
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			addr := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
			if w == 0 {
				return fmt.Errorf("endpoint %s has weight 0", addr)
			}
			if seen[addr] {
				return fmt.Errorf("endpoint %s appears twice in one locality", addr)
			}
			seen[addr] = true
			sum += w
		}
		if sum > math.MaxUint32 {
			return fmt.Errorf("the endpoint weights of one locality sum to %d; Envoy and grpc-go refuse a sum above %d", sum, uint64(math.MaxUint32))
		}
	}
	return nil
}

// Load-balancing policy list.
//
// source/common/upstream/upstream_impl.cc, ClusterInfoImpl::configureLbPolicies: with
// load_balancing_policy set, lb_subset_config is refused ("load_balancing_policy cannot be
// combined with lb_subset_config"), and so are common_lb_config's zone_aware_lb_config,
// locality_weighted_lb_config and consistent_hashing_lb_config; and a list none of whose
// entries names a registered factory is refused ("didn't find a registered load balancer
// factory implementation"). The registered factories checked here are the policies every
// standard Envoy build links (source/extensions/extensions_build_config.bzl).
func checkLoadBalancingPolicy(c *clusterv3.Cluster) error {
	lbp := c.GetLoadBalancingPolicy()
	if lbp == nil {
		return nil
	}
	if c.GetLbSubsetConfig() != nil {
		return errors.New("load_balancing_policy cannot be combined with lb_subset_config")
	}
	if cl := c.GetCommonLbConfig(); cl.GetZoneAwareLbConfig() != nil || cl.GetLocalityWeightedLbConfig() != nil || cl.GetConsistentHashingLbConfig() != nil {
		return errors.New("load_balancing_policy cannot be combined with common_lb_config's zone_aware, locality_weighted or consistent_hashing configs")
	}
	for _, p := range lbp.GetPolicies() {
		if envoyLBPolicies[p.GetTypedExtensionConfig().GetTypedConfig().GetTypeUrl()] {
			return nil
		}
	}
	return errors.New("load_balancing_policy names no policy Envoy registers")
}

// envoyLBPolicies are the type URLs of the load-balancing policies of a standard Envoy build.
var envoyLBPolicies = map[string]bool{
	"type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest": true,
	"type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin":     true,
	"type.googleapis.com/envoy.extensions.load_balancing_policies.random.v3.Random":              true,
	"type.googleapis.com/envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash":         true,
	"type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev":              true,
}

// Health check statuses.
//
// source/extensions/health_checkers/http/health_checker_impl.cc,
// HttpHealthCheckerImpl::HttpStatusChecker::HttpStatusChecker (validateRange): each expected
// status range [start, end) needs start < end, start >= 100 and end <= 600.
func checkExpectedStatuses(ranges []*typev3.Int64Range) error {
	for _, r := range ranges {
		if r.GetStart() >= r.GetEnd() || r.GetStart() < 100 || r.GetEnd() > 600 {
			return fmt.Errorf("health check expected status range [%d, %d) is not within [100, 600)", r.GetStart(), r.GetEnd())
		}
	}
	return nil
}

// envoyDefaultMaxEjection is DEFAULT_MAX_EJECTION_TIME_MS (10 x the 30 s default base) of
// source/common/upstream/outlier_detection_impl.h.
const envoyDefaultMaxEjection = 300 * time.Second

// Outlier detection.
//
// source/common/upstream/outlier_detection_impl.cc, DetectorImpl::create: a cluster whose
// max_ejection_time (300 s when unset, DetectorConfig) is below its base_ejection_time is
// refused ("outlier detector's max_ejection_time cannot be smaller than base_ejection_time").
// Newer Envoy documents the unset max as the larger of 300 s and the base; we keep the
// older, stricter reading, since either Envoy may be on the other end.
func checkOutlierEjection(od *clusterv3.OutlierDetection) error {
	if od == nil || od.GetBaseEjectionTime() == nil {
		return nil
	}
	base := od.GetBaseEjectionTime().AsDuration().Truncate(time.Millisecond)
	mx := envoyDefaultMaxEjection
	if od.GetMaxEjectionTime() != nil {
		mx = od.GetMaxEjectionTime().AsDuration().Truncate(time.Millisecond)
	}
	if mx < base {
		return fmt.Errorf("outlier detection base ejection time %v is above the max ejection time %v", base, mx)
	}
	return nil
}

// Header mutations.
//
// source/common/router/header_parser.cc, HeaderParser::configure and
// parseHttpHeaderFormatter: a header to add whose name is not
// Http::HeaderUtility::isModifiableHeader, or a header to remove that is not
// isRemovableHeader, is refused (":-prefixed or host headers may not be modified/removed").
// source/common/http/header_utility.cc defines both the same way: the name must not start
// with ':' and must not be "host" (any case).
func checkHeaderMutations(side string, add []*corev3.HeaderValueOption, remove []string) error {
	for _, h := range add {
		name := h.GetHeader().GetKey()
		if !envoyModifiableHeader(name) {
			return fmt.Errorf("%s header %q cannot be added or set: Envoy refuses to modify pseudo-headers and host (use the route's host rewrite)", side, name)
		}
		if err := checkHeaderFormat(h.GetHeader().GetValue()); err != nil {
			return fmt.Errorf("%s header %q: %w", side, name, err)
		}
	}
	for _, name := range remove {
		if !envoyModifiableHeader(name) {
			return fmt.Errorf("%s header %q cannot be removed: Envoy refuses to remove pseudo-headers and host", side, name)
		}
	}
	return nil
}

// envoyModifiableHeader is HeaderUtility::isModifiableHeader (and isRemovableHeader, which
// is the same predicate).
func envoyModifiableHeader(name string) bool {
	return (name == "" || name[0] != ':') && !strings.EqualFold(name, "host")
}

// formatCommand says what arguments a substitution command takes.
type formatCommand struct {
	param  int8 // 0: none, 1: required, -1: optional
	length bool // ":N" allowed
}

// formatCommands are the substitution commands a header value may use: a deliberately short
// list of Envoy's built-ins (source/common/formatter/stream_info_formatter.cc and
// http_specific_formatter.cc, each with its CommandSyntaxChecker). Envoy refuses an unknown
// command ("Not supported field in StreamInfo"); we also refuse the built-ins not listed here
// rather than guess their argument rules.
var formatCommands = map[string]formatCommand{
	"REQ":                                    {1, true},
	"RESP":                                   {1, true},
	"DYNAMIC_METADATA":                       {1, false}, // PARAMS_REQUIRED only (no LENGTH_ALLOWED) in current Envoy
	"FILTER_STATE":                           {1, true},
	"START_TIME":                             {-1, false},
	"PROTOCOL":                               {0, false},
	"HOSTNAME":                               {0, false},
	"RESPONSE_CODE":                          {0, false},
	"ROUTE_NAME":                             {0, false},
	"REQUESTED_SERVER_NAME":                  {0, false},
	"UPSTREAM_HOST":                          {0, false},
	"UPSTREAM_CLUSTER":                       {0, false},
	"UPSTREAM_REMOTE_ADDRESS":                {0, false},
	"DOWNSTREAM_REMOTE_ADDRESS":              {0, false},
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": {0, false},
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":       {0, false},
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": {0, false},
	"DOWNSTREAM_LOCAL_ADDRESS":                      {0, false},
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         {0, false},
}

// checkHeaderFormat checks a header value as Envoy parses it: a substitution format string
// (header_parser.cc parseHttpHeaderFormatter → Formatter::FormatterImpl::create →
// SubstitutionFormatParser::parse in source/common/formatter/substitution_formatter.cc).
// Text is literal except '%': "%%" is a literal '%', and any other '%' must start a command
// matching commandWithArgsRegex, %COMMAND%, %COMMAND(arg)% or %COMMAND(arg):N%, with COMMAND
// in [A-Z0-9_]+ and arg without ')'. Anything else is "Couldn't find valid command".
func checkHeaderFormat(v string) error {
	for i := 0; i < len(v); {
		if v[i] != '%' {
			i++
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			i += 2
			continue
		}
		n, err := formatToken(v[i:])
		if err != nil {
			return fmt.Errorf("%w (at byte %d; Envoy header values are format strings: write %%%% for a literal %%)", err, i)
		}
		i += n
	}
	return nil
}

// formatToken parses one command at the start of s ("%..."), returning its length.
func formatToken(s string) (int, error) {
	i := 1
	for i < len(s) && (s[i] >= 'A' && s[i] <= 'Z' || s[i] >= '0' && s[i] <= '9' || s[i] == '_') {
		i++
	}
	name := s[1:i]
	if name == "" {
		return 0, errors.New("'%' starts no command")
	}
	hasParam, hasLen, arg, lenDigits := false, false, "", ""
	if i < len(s) && s[i] == '(' {
		end := strings.IndexByte(s[i:], ')')
		if end < 0 {
			return 0, fmt.Errorf("%%%s( has no closing ')'", name)
		}
		if strings.ContainsAny(s[i:i+end], "\n\r\x00") {
			return 0, fmt.Errorf("%%%s: argument contains a newline", name)
		}
		// Envoy's CommandSyntaxChecker sees "()" as no argument.
		hasParam = end > 1
		arg = s[i+1 : i+end]
		i += end + 1
	}
	if i < len(s) && s[i] == ':' {
		j := i + 1
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		if j > i+1 {
			hasLen = true
			lenDigits = s[i+1 : j]
			i = j
		}
	}
	if i >= len(s) || s[i] != '%' {
		return 0, fmt.Errorf("%%%s is not closed by '%%'", name)
	}
	c, ok := formatCommands[name]
	switch {
	case !ok:
		return 0, fmt.Errorf("%%%s%% is not a substitution command the gateway accepts", name)
	case c.param == 1 && !hasParam:
		return 0, fmt.Errorf("%%%s%% needs an argument", name)
	case c.param == 0 && hasParam:
		return 0, fmt.Errorf("%%%s%% takes no argument", name)
	case hasLen && !c.length:
		return 0, fmt.Errorf("%%%s%% takes no length", name)
	}
	// SubstitutionFormatParser::parse reads the length with absl::SimpleAtoi into a size_t.
	if _, err := strconv.ParseUint(lenDigits, 10, 64); hasLen && err != nil {
		return 0, fmt.Errorf("%%%s%%: length %s is above %d", name, lenDigits, uint64(math.MaxUint64))
	}
	if hasParam {
		if err := checkFormatArg(name, arg); err != nil {
			return 0, fmt.Errorf("%%%s(%s)%%: %w", name, arg, err)
		}
	}
	return i + 1, nil
}

// startTimeNewline is getSystemTimeFormatNewlinePattern (stream_info_formatter.cc): a
// START_TIME format matching it anywhere is refused ("Format string contains newline").
var startTimeNewline = regexp.MustCompile(`%[-_0^#]*[1-9]*(E|O)?n`)

// headerToken is a header name as Envoy's REQ/RESP accept it: an HTTP token, or ':' and a
// token for a pseudo-header (substitution_format_utility.cc parseSubcommandHeaders with
// consistent_header_validation: HeaderUtility::headerNameIsValid).
var headerToken = regexp.MustCompile("^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

// checkFormatArg applies what each command's formatter refuses in its argument when Envoy
// builds it.
func checkFormatArg(name, arg string) error {
	switch name {
	case "REQ", "RESP":
		// parseSubcommandHeaders: main?alternative, one alternative at most.
		parts := strings.Split(arg, "?")
		if len(parts) > 2 {
			return errors.New("more than one alternative header (Envoy refuses it)")
		}
		for _, h := range parts {
			if !headerToken.MatchString(h) {
				return fmt.Errorf("%q is not a header name", h)
			}
		}
	case "FILTER_STATE":
		// FilterStateFormatter::create: KEY[:PLAIN|:TYPED|:FIELD:NAME], tokens past the
		// third ignored.
		parts := append(strings.SplitN(arg, ":", 4), "", "")
		key, typ, field := parts[0], parts[1], parts[2]
		switch {
		case key == "":
			return errors.New("the filter state key is empty")
		case typ != "" && typ != "PLAIN" && typ != "TYPED" && typ != "FIELD":
			return fmt.Errorf("serialize type %q is not PLAIN, TYPED or FIELD", typ)
		case (typ == "FIELD") != (field != ""):
			return errors.New("a field name goes with FIELD and only with it")
		}
	case "START_TIME":
		if startTimeNewline.MatchString(arg) {
			return errors.New("the time format has a newline specifier")
		}
	}
	return nil
}

// Weighted clusters.
//
// source/common/router/weighted_cluster_specifier.cc (WeightedClusterSpecifierPlugin, from
// RouteEntryImplBase in config_impl.cc): the weights are summed in 64 bits and the route is
// refused when the sum exceeds 2^32-1 ("The sum of weights of all weighted clusters of route
// ... exceeds") or is 0. grpc-go refuses the same (xds/internal/xdsclient/xdsresource/
// unmarshal_rds.go, routesProtoToSlice: total weight above math.MaxUint32 or 0).
func checkWeightedClusters(wc *routev3.WeightedCluster) error {
	if wc == nil {
		return nil
	}
	var total uint64
	for _, c := range wc.GetClusters() {
		total += uint64(c.GetWeight().GetValue())
	}
	if total > math.MaxUint32 {
		return fmt.Errorf("the target weights sum to %d; Envoy and grpc-go refuse a sum above %d", total, uint64(math.MaxUint32))
	}
	if total == 0 {
		return errors.New("the target weights sum to 0")
	}
	return nil
}

// Retry back-off.
//
// source/common/router/config_impl.cc, RetryPolicyImpl::RetryPolicyImpl: base_interval and
// max_interval are read in whole milliseconds (rounded up to 1 ms), and a max_interval below
// the base_interval is refused ("retry_policy.max_interval must greater than or equal to the
// base_interval").
func checkRetryBackOff(rp *routev3.RetryPolicy) error {
	bo := rp.GetRetryBackOff()
	if bo == nil || bo.GetMaxInterval() == nil {
		return nil
	}
	ms := func(d *durationpb.Duration) int64 { return max(d.AsDuration().Milliseconds(), 1) }
	if base, mx := ms(bo.GetBaseInterval()), ms(bo.GetMaxInterval()); mx < base {
		return fmt.Errorf("retry max interval %dms is below the base interval %dms", mx, base)
	}
	return nil
}

// envoyMaxDurationSeconds is kMaxSecondsValue in source/common/protobuf/utility.cc
// (validateDurationNoThrow, used by DurationUtil::durationToMilliseconds and so by every
// PROTOBUF_GET_MS_*): (INT64_MAX - 999999999) / 10^9. A Go time.Duration reaches
// 9223372036 s, one second more, so the largest Go durations are refused by Envoy.
const envoyMaxDurationSeconds = (math.MaxInt64 - 999999999) / 1000000000

// walkDepth bounds the walk (our resources nest a few levels; an Any adds one).
const walkDepth = 32

// walkRuntime visits every field of a resource, Any payloads included (typed_per_filter_config
// and typed configs are not looked into by ValidateAll either), and checks the messages whose
// rules do not depend on where they are: every RegexMatcher (RE2 syntax and program size) and
// every Duration (Envoy's range).
func walkRuntime(m protoreflect.Message, depth int, packed []packedAny) error {
	if depth > walkDepth {
		return errors.New("resource nests too deep to check")
	}
	p := planOf(m.Descriptor())
	switch p.kind {
	case walkRegex, walkDuration, walkAny:
		switch v := m.Interface().(type) {
		case *matcherv3.RegexMatcher:
			// source/common/common/regex.cc, CompiledGoogleReMatcher::CompiledGoogleReMatcher:
			// the regex must compile with RE2, and its ProgramSize() must not exceed the runtime
			// value re2.max_program_size.error_level (100 by default; we never change it).
			return checkRE2(v.GetRegex())
		case *durationpb.Duration:
			if v.GetSeconds() < 0 || v.GetNanos() < 0 || v.GetSeconds() > envoyMaxDurationSeconds {
				return fmt.Errorf("duration %v is outside Envoy's range (0 to %d s)", time.Duration(v.GetSeconds())*time.Second, envoyMaxDurationSeconds)
			}
			return nil
		case *anypb.Any:
			for _, p := range packed {
				if p.a == v {
					return walkRuntime(p.m.ProtoReflect(), depth+1, packed)
				}
			}
			if a, err := authzDisabled(); err == nil && a == v {
				return walkRuntime(authzDisabledConfig.ProtoReflect(), depth+1, packed)
			}
			inner, err := v.UnmarshalNew()
			if err != nil {
				return fmt.Errorf("%s: %w", v.GetTypeUrl(), err)
			}
			return walkRuntime(inner.ProtoReflect(), depth+1, packed)
		}
	}
	// Only the fields that may hold a checked message, each only when set (what Range
	// would visit); of a oneof, the member that is set.
	for _, fd := range p.fields {
		if m.Has(fd) {
			if err := walkField(m, fd, depth, packed); err != nil {
				return err
			}
		}
	}
	for _, od := range p.oneofs {
		if fd := m.WhichOneof(od); fd != nil && p.inOneof[fd.Number()] {
			if err := walkField(m, fd, depth, packed); err != nil {
				return err
			}
		}
	}
	return nil
}

// walkField walks the value of a set field of m.
func walkField(m protoreflect.Message, fd protoreflect.FieldDescriptor, depth int, packed []packedAny) error {
	val := m.Get(fd)
	switch {
	case fd.IsMap():
		var err error
		val.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
			err = walkRuntime(mv.Message(), depth+1, packed)
			return err == nil
		})
		return err
	case fd.IsList():
		l := val.List()
		for i := 0; i < l.Len(); i++ {
			if err := walkRuntime(l.Get(i).Message(), depth+1, packed); err != nil {
				return err
			}
		}
		return nil
	}
	return walkRuntime(val.Message(), depth+1, packed)
}

// Kinds of messages walkRuntime checks.
const (
	walkFields = iota
	walkRegex
	walkDuration
	walkAny
)

// walkPlan is what walkRuntime does with a message type: check it (kind), or descend into
// the fields that may hold a checked message (map values and list elements of message
// type included).
type walkPlan struct {
	kind   int
	fields []protoreflect.FieldDescriptor // outside oneofs
	// oneofs holding a member that may hold a checked message, and those members by number.
	oneofs  []protoreflect.OneofDescriptor
	inOneof map[protoreflect.FieldNumber]bool
}

// walkPlans caches the plan of each message type (by its descriptor).
var walkPlans sync.Map // protoreflect.MessageDescriptor → *walkPlan

func planOf(md protoreflect.MessageDescriptor) *walkPlan {
	if p, ok := walkPlans.Load(md); ok {
		return p.(*walkPlan)
	}
	p := &walkPlan{}
	switch md.FullName() {
	case regexMatcherName:
		p.kind = walkRegex
	case durationName:
		p.kind = walkDuration
	case anyName:
		p.kind = walkAny
	default:
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			fd := fields.Get(i)
			sub := fd.Message()
			if fd.IsMap() {
				sub = fd.MapValue().Message()
			}
			if sub == nil || !mayHoldChecked(sub) {
				continue
			}
			if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
				if p.inOneof == nil {
					p.inOneof = map[protoreflect.FieldNumber]bool{}
				}
				if !slices.Contains(p.oneofs, od) {
					p.oneofs = append(p.oneofs, od)
				}
				p.inOneof[fd.Number()] = true
				continue
			}
			p.fields = append(p.fields, fd)
		}
	}
	walkPlans.Store(md, p)
	return p
}

// checkedTypes caches mayHoldChecked per message type.
var checkedTypes sync.Map // protoreflect.FullName → bool

// mayHoldChecked reports whether a message of type md can hold, at any depth, a message that
// walkRuntime checks (a RegexMatcher, a Duration, or an Any that could hold either): the walk
// skips the rest (endpoints, addresses, metadata), which keeps it cheap.
func mayHoldChecked(md protoreflect.MessageDescriptor) bool {
	if v, ok := checkedTypes.Load(md.FullName()); ok {
		return v.(bool)
	}
	seen := map[protoreflect.FullName]bool{}
	var visit func(md protoreflect.MessageDescriptor) bool
	visit = func(md protoreflect.MessageDescriptor) bool {
		if seen[md.FullName()] {
			return false
		}
		seen[md.FullName()] = true
		switch md.FullName() {
		case regexMatcherName, durationName, anyName:
			return true
		}
		fields := md.Fields()
		for i := 0; i < fields.Len(); i++ {
			if sub := fields.Get(i).Message(); sub != nil && visit(sub) {
				return true
			}
		}
		return false
	}
	v := visit(md)
	checkedTypes.Store(md.FullName(), v)
	return v
}

var (
	regexMatcherName = (&matcherv3.RegexMatcher{}).ProtoReflect().Descriptor().FullName()
	durationName     = (&durationpb.Duration{}).ProtoReflect().Descriptor().FullName()
	anyName          = (&anypb.Any{}).ProtoReflect().Descriptor().FullName()
)

// checkVirtualHostDomains applies the rules Envoy checks across the virtual hosts of one
// route configuration: source/common/router/config_impl.cc, RouteMatcher::RouteMatcher:
// a domain (lower-cased) may appear once in the whole configuration ("Only unique values for
// domains are permitted"; for "*": "Only a single wildcard domain is permitted").
func checkVirtualHostDomains(rc *routev3.RouteConfiguration) error {
	seen := map[string]string{}
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			k := strings.ToLower(d)
			if other, dup := seen[k]; dup {
				return fmt.Errorf("domain %q appears twice (virtual hosts %s and %s): Envoy refuses a route configuration with a repeated domain", d, other, vh.GetName())
			}
			seen[k] = vh.GetName()
		}
	}
	return nil
}
