package waf

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// RuleRepeatOffender is the metric rule label of a request denied because its client is
// banned by the repeat-offender tracker; RuleMaxHeaderSize and RuleMaxBodySize label the
// gateway's own size limits.
const (
	RuleRepeatOffender = "block_malicious_ips"
	RuleMaxHeaderSize  = "max_header_size"
	RuleMaxBodySize    = "max_request_body_size"
	CategoryIPDenied   = "ip-reputation"
)

// RouteWAF is the WAF checker of one route: a shared compiled WAF plus the route's
// repeat-offender policy. ext_authz calls Check once per request.
type RouteWAF struct {
	RouteID string
	WAF     *WAF
	Policy  OffenderPolicy

	metrics *Metrics
	tracker *Tracker
	logger  *slog.Logger
}

// Check inspects the request, counts threats in the metrics and, when the route has
// block_malicious_ips, records the client as an offender (a client over the threshold is
// denied through the IPDenier, and by this checker until the ban ends). clientIP is the
// client address the caller trusts (after X-Forwarded-For processing); empty means
// Envoy's source address.
func (rw *RouteWAF) Check(ctx context.Context, req *authv3.CheckRequest, clientIP string) Verdict {
	if clientIP == "" {
		clientIP, _ = socketAddress(req.GetAttributes().GetSource().GetAddress())
	}
	if rw.Policy.Enabled && rw.tracker != nil && clientIP != "" {
		if until, banned := rw.tracker.Banned(clientIP); banned {
			v := Verdict{
				Allowed:  rw.WAF.Mode() == ModeDetect,
				Detected: true,
				Status:   StatusForbidden,
				Category: CategoryIPDenied,
				Message:  fmt.Sprintf("client address is denied until %s after repeated WAF violations", until.UTC().Format("2006-01-02T15:04:05Z")),
			}
			rw.metrics.observe(rw.RouteID, CategoryIPDenied, RuleRepeatOffender)
			return v
		}
	}

	v := rw.WAF.Inspect(ctx, req)
	if !v.Detected {
		return v
	}
	rw.count(v)
	if rw.logger != nil {
		rw.logger.LogAttrs(ctx, slog.LevelWarn, "waf threat",
			slog.String("route_id", rw.RouteID), slog.String("client_ip", clientIP),
			slog.Bool("blocked", !v.Allowed), slog.String("category", v.Category),
			slog.Int("rule_id", v.RuleID), slog.Any("rule_ids", v.RuleIDs),
			slog.Int("anomaly_score", v.AnomalyScore), slog.String("message", v.Message),
			slog.String("request_id", req.GetAttributes().GetRequest().GetHttp().GetId()))
	}
	if rw.Policy.Enabled && rw.tracker != nil && clientIP != "" {
		reason := fmt.Sprintf("waf: %d violations within %s (last: route %s, %s)",
			rw.Policy.Threshold, rw.Policy.Window, rw.RouteID, v.Category)
		if _, _, err := rw.tracker.Record(ctx, clientIP, rw.Policy, reason); err != nil && rw.logger != nil {
			rw.logger.Error("waf: denying repeat offender", "client_ip", clientIP, "error", err)
		}
	}
	return v
}

// count increments the threats metric: one per matched attack rule, or one for the
// gateway's own limits.
func (rw *RouteWAF) count(v Verdict) {
	if rw.metrics == nil {
		return
	}
	if v.Category == CategoryLimits {
		rule := RuleMaxBodySize
		if v.Status == StatusHeadersTooLarge {
			rule = RuleMaxHeaderSize
		}
		rw.metrics.observe(rw.RouteID, CategoryLimits, rule)
		return
	}
	counted := false
	for _, id := range v.RuleIDs {
		if isEvaluationRule(id) {
			continue
		}
		cat := rw.WAF.ruleCategory(id)
		if cat == "" {
			continue
		}
		rw.metrics.observe(rw.RouteID, cat, strconv.Itoa(id))
		counted = true
	}
	if !counted {
		rw.metrics.observe(rw.RouteID, v.Category, strconv.Itoa(v.RuleID))
	}
}
