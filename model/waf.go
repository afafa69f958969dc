package model

import (
	"fmt"
	"strings"
	"time"
)

// WAF modes.
const (
	WAFModeBlock  = "block"
	WAFModeDetect = "detect"
)

// WAFSettings configures the Coraza WAF (OWASP CRS v4) for a route, or globally in Settings.
// Field names follow the README this project grew from (enabled, block_malicious_ips,
// max_request_body_size, max_header_size, geoblocking_enabled, blocked_countries).
//
// Routes with identical settings share one compiled WAF. A route's `waf` object replaces
// the global one as a whole.
type WAFSettings struct {
	// Enabled turns the WAF on (default true when the object is present).
	Enabled *bool `json:"enabled,omitempty"`
	// Mode is block (default: requests over the anomaly threshold are denied) or detect
	// (matches are logged and counted, nothing is denied).
	Mode string `json:"mode,omitempty"`
	// ParanoiaLevel is the CRS blocking paranoia level, 1-4 (default 1).
	ParanoiaLevel int `json:"paranoia_level,omitempty"`
	// AnomalyThreshold is the CRS inbound anomaly score threshold (default 5: one critical match).
	AnomalyThreshold int `json:"anomaly_threshold,omitempty"`
	// MaxRequestBodySize in bytes; larger bodies are rejected with 413 (default 10 MiB).
	MaxRequestBodySize int64 `json:"max_request_body_size,omitempty"`
	// CheckTimeout bounds the ext_authz check of the route's requests, WAF included (default
	// 10s, at most 5m, whole milliseconds): Envoy waits that long for the verdict, then
	// answers 503, and the WAF stops working on the request.
	CheckTimeout Duration `json:"check_timeout,omitempty"`
	// MaxHeaderSize in bytes: the sum of every header's name and value; larger header
	// sections are rejected with 431 (0 = no limit besides Envoy's own).
	MaxHeaderSize int64 `json:"max_header_size,omitempty"`
	// ExcludeRules lists CRS (or custom) rule ids to remove.
	ExcludeRules []int `json:"exclude_rules,omitempty"`
	// CustomRules are SecLang directives loaded before the CRS rules (custom rules and
	// runtime exclusions with ctl:ruleRemoveById / ctl:ruleRemoveTargetById).
	CustomRules string `json:"custom_rules,omitempty"`
	// CustomRulesAfterCRS are SecLang directives loaded after the CRS rules
	// (SecRuleUpdateTargetById, SecRuleUpdateActionById and the like).
	CustomRulesAfterCRS string `json:"custom_rules_after_crs,omitempty"`
	// BlockMaliciousIPs denies a client address that trips the WAF MaliciousIPThreshold
	// times within MaliciousIPWindow, for MaliciousIPBanDuration (an ip-rules deny entry
	// with an expiry, source "waf").
	BlockMaliciousIPs      bool     `json:"block_malicious_ips,omitempty"`
	MaliciousIPThreshold   int      `json:"malicious_ip_threshold,omitempty"`    // default 5
	MaliciousIPWindow      Duration `json:"malicious_ip_window,omitempty"`       // default 5m
	MaliciousIPBanDuration Duration `json:"malicious_ip_ban_duration,omitempty"` // default 1h
	// GeoblockingEnabled and BlockedCountries (ISO 3166-1 alpha-2 codes) are enforced by
	// the ext_authz geo checker.
	GeoblockingEnabled bool     `json:"geoblocking_enabled,omitempty"`
	BlockedCountries   []string `json:"blocked_countries,omitempty"`
}

// Defaults applied by the WAF to unset fields.
const (
	DefaultWAFParanoiaLevel          = 1
	DefaultWAFAnomalyThreshold       = 5
	DefaultWAFMaxRequestBodySize     = 10 << 20
	DefaultWAFCheckTimeout           = 10 * time.Second
	MaxWAFCheckTimeout               = 5 * time.Minute
	DefaultWAFMaliciousIPThreshold   = 5
	DefaultWAFMaliciousIPWindow      = 5 * time.Minute
	DefaultWAFMaliciousIPBanDuration = time.Hour
	// MaxWAFRequestBodySize bounds max_request_body_size. Coraza buffers the body in memory,
	// Envoy buffers it for the Check, and the gRPC port must accept a message that large from
	// any caller that reaches it (waf.MaxCheckRequestBytes): 64 MiB keeps that bounded.
	MaxWAFRequestBodySize = 64 << 20
)

// IsEnabled reports whether the WAF is on: a present object is enabled unless enabled is false.
func (w *WAFSettings) IsEnabled() bool {
	return w != nil && (w.Enabled == nil || *w.Enabled)
}

// Validate checks the WAF settings. Custom SecLang rules are compiled by the waf package
// (waf.ValidateSettings), which the management API calls as well.
func (w *WAFSettings) Validate() FieldErrors {
	var errs FieldErrors
	if w == nil {
		return nil
	}
	switch w.Mode {
	case "", WAFModeBlock, WAFModeDetect:
	default:
		errs.Add("mode", "must be block or detect")
	}
	if w.ParanoiaLevel < 0 || w.ParanoiaLevel > 4 {
		errs.Add("paranoia_level", "must be 1-4")
	}
	if w.AnomalyThreshold < 0 {
		errs.Add("anomaly_threshold", "must not be negative")
	}
	if w.MaxRequestBodySize < 0 || w.MaxRequestBodySize > MaxWAFRequestBodySize {
		errs.Add("max_request_body_size", "must be between 0 and %d", MaxWAFRequestBodySize)
	}
	if w.MaxHeaderSize < 0 {
		errs.Add("max_header_size", "must not be negative")
	}
	for i, id := range w.ExcludeRules {
		if id <= 0 {
			errs.Add(fmt.Sprintf("exclude_rules[%d]", i), "must be a positive rule id")
		}
	}
	if w.MaliciousIPThreshold < 0 {
		errs.Add("malicious_ip_threshold", "must not be negative")
	}
	if w.MaliciousIPWindow < 0 {
		errs.Add("malicious_ip_window", "must not be negative")
	}
	if w.MaliciousIPBanDuration < 0 {
		errs.Add("malicious_ip_ban_duration", "must not be negative")
	}
	if d := w.CheckTimeout.D(); d < 0 || d > MaxWAFCheckTimeout || d%time.Millisecond != 0 {
		errs.Add("check_timeout", "must be a whole number of milliseconds between 0 and %s", MaxWAFCheckTimeout)
	}
	for i, c := range w.BlockedCountries {
		if len(c) != 2 || !isASCIILetters(strings.ToUpper(c)) {
			errs.Add(fmt.Sprintf("blocked_countries[%d]", i), "must be an ISO 3166-1 alpha-2 code such as \"DE\"")
		}
	}
	return errs
}

func isASCIILetters(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
