package waf

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// Mode says what a WAF does with a request over the anomaly threshold.
type Mode string

// The WAF modes.
const (
	ModeBlock  Mode = model.WAFModeBlock
	ModeDetect Mode = model.WAFModeDetect
)

// Config is WAFSettings with every default applied: the input of one compiled ruleset.
type Config struct {
	Mode               Mode
	ParanoiaLevel      int
	AnomalyThreshold   int
	MaxRequestBodySize int64
	MaxHeaderSize      int64
	ExcludeRules       []int // sorted, unique
	CustomRules        string
	CustomRulesAfter   string
}

// OffenderPolicy is the repeat-offender part of the settings (not part of the ruleset).
type OffenderPolicy struct {
	Enabled     bool
	Threshold   int
	Window      time.Duration
	BanDuration time.Duration
}

// ConfigFromSettings applies the defaults to s. s must not be nil.
func ConfigFromSettings(s *model.WAFSettings) Config {
	c := Config{
		Mode:               ModeBlock,
		ParanoiaLevel:      s.ParanoiaLevel,
		AnomalyThreshold:   s.AnomalyThreshold,
		MaxRequestBodySize: s.MaxRequestBodySize,
		MaxHeaderSize:      s.MaxHeaderSize,
		CustomRules:        strings.TrimSpace(s.CustomRules),
		CustomRulesAfter:   strings.TrimSpace(s.CustomRulesAfterCRS),
	}
	if s.Mode == model.WAFModeDetect {
		c.Mode = ModeDetect
	}
	if c.ParanoiaLevel == 0 {
		c.ParanoiaLevel = model.DefaultWAFParanoiaLevel
	}
	if c.AnomalyThreshold == 0 {
		c.AnomalyThreshold = model.DefaultWAFAnomalyThreshold
	}
	if c.MaxRequestBodySize == 0 {
		c.MaxRequestBodySize = model.DefaultWAFMaxRequestBodySize
	}
	c.ExcludeRules = slices.Clone(s.ExcludeRules)
	slices.Sort(c.ExcludeRules)
	c.ExcludeRules = slices.Compact(c.ExcludeRules)
	return c
}

// OffenderPolicyFromSettings applies the defaults to the repeat-offender settings.
func OffenderPolicyFromSettings(s *model.WAFSettings) OffenderPolicy {
	p := OffenderPolicy{
		Enabled:     s != nil && s.BlockMaliciousIPs,
		Threshold:   model.DefaultWAFMaliciousIPThreshold,
		Window:      model.DefaultWAFMaliciousIPWindow,
		BanDuration: model.DefaultWAFMaliciousIPBanDuration,
	}
	if s == nil {
		return p
	}
	if s.MaliciousIPThreshold > 0 {
		p.Threshold = s.MaliciousIPThreshold
	}
	if s.MaliciousIPWindow > 0 {
		p.Window = s.MaliciousIPWindow.D()
	}
	if s.MaliciousIPBanDuration > 0 {
		p.BanDuration = s.MaliciousIPBanDuration.D()
	}
	return p
}

// Section names of the final directives, used in error messages.
const (
	sectionBase        = "base"
	sectionCustom      = "custom_rules"
	sectionCRS         = "crs"
	sectionCustomAfter = "custom_rules_after_crs"
	sectionExclusions  = "exclude_rules"
)

// section is one block of directives of a ruleset.
type section struct {
	name       string
	directives string
	crs        bool // directives is crsMarker: the CRS request rules are loaded here
	screen     bool // with crs: the request screen runs before the CRS rules (screen.go)
	// checkpoints, with crs: deadline checkpoints between CRS files (deadline.go).
	checkpoints bool
}

// screenable reports whether the CRS rules can be screened per request: the user's rules
// do not change CRS rules' targets or actions (SecRuleUpdate*), which the screen reads
// from the CRS text, and do not skip a number of rules (skip:N counts rules that are not
// removed, so a skip reaching into the CRS would land elsewhere).
func (c Config) screenable() bool {
	for _, s := range []string{c.CustomRules, c.CustomRulesAfter} {
		if strings.Contains(strings.ToLower(s), "secruleupdate") || customSkipRx.MatchString(s) {
			return false
		}
	}
	return true
}

var customSkipRx = regexp.MustCompile(`(?i)(?:^|[",\s])skip:`)

// sections renders the ruleset in load order: engine base config, CRS setup, custom rules,
// CRS request rules, custom rules after CRS, rule removals.
func (c Config) sections() []section {
	var base strings.Builder
	engine := "On"
	if c.Mode == ModeDetect {
		engine = "DetectionOnly"
	}
	fmt.Fprintf(&base, "SecRuleEngine %s\n", engine)
	// One byte over the limit: Inspect refuses a body over max_request_body_size itself, and
	// a body of exactly the limit passes, as it passes Envoy (its buffer calls a body too
	// large when it is longer than the limit); Coraza rejects at the limit
	// (length+written >= SecRequestBodyLimit in Transaction.WriteRequestBody).
	fmt.Fprintf(&base, "SecRequestBodyLimit %d\n", c.MaxRequestBodySize+1)
	fmt.Fprintf(&base, "SecRequestBodyInMemoryLimit %d\n", c.MaxRequestBodySize+1)
	fmt.Fprintf(&base, "SecRequestBodyNoFilesLimit %d\n", c.MaxRequestBodySize+1)
	base.WriteString(baseDirectives)
	fmt.Fprintf(&base, crsSettingsTemplate, c.ParanoiaLevel, c.AnomalyThreshold)

	out := []section{{name: sectionBase, directives: base.String()}}
	if c.CustomRules != "" {
		out = append(out, section{name: sectionCustom, directives: c.CustomRules})
	}
	crs := crsMarker
	if pl := c.prunableLevel(); pl < maxParanoiaLevel {
		crs += fmt.Sprintf(", without the rules of paranoia level > %d", pl)
	}
	screen := c.screenable()
	if screen {
		crs += ", screened per request (screen.go)"
	}
	// A custom rule's skip:N could reach into the CRS, and a CRS rule given a skip:N after
	// the CRS (SecRuleUpdateActionById) counts the rules after it: a checkpoint would take
	// one of its N.
	checkpoints := !customSkipRx.MatchString(c.CustomRules) && !customSkipRx.MatchString(c.CustomRulesAfter)
	out = append(out, section{name: sectionCRS, directives: crs, crs: true, screen: screen, checkpoints: checkpoints})
	if c.CustomRulesAfter != "" {
		out = append(out, section{name: sectionCustomAfter, directives: c.CustomRulesAfter})
	}
	if len(c.ExcludeRules) > 0 {
		ids := make([]string, len(c.ExcludeRules))
		for i, id := range c.ExcludeRules {
			ids[i] = fmt.Sprint(id)
		}
		out = append(out, section{name: sectionExclusions, directives: "SecRuleRemoveById " + strings.Join(ids, " ")})
	}
	return out
}

// Directives returns the final SecLang directives of the ruleset.
func (c Config) Directives() string {
	var b strings.Builder
	for _, s := range c.sections() {
		fmt.Fprintf(&b, "# --- %s\n%s\n", s.name, s.directives)
	}
	return b.String()
}

// Key identifies the compiled ruleset: a hash of its final directives.
func (c Config) Key() string {
	sum := sha256.Sum256([]byte(c.Directives()))
	return hex.EncodeToString(sum[:16])
}

// baseDirectives is the engine configuration. It follows Coraza's recommended config for
// the request side (body processors, body errors) and turns off everything ext_authz never
// sees (response bodies) or the gateway reports elsewhere (audit log). Rule 200007 (also
// Coraza's recommended config) refuses a request at SecArgumentsLimit: Coraza stops
// collecting arguments there, so without it an attack placed after the 1,000th argument
// of a form is never looked at.
const baseDirectives = `SecRequestBodyAccess On
SecRequestBodyLimitAction Reject
SecRequestBodyJsonDepthLimit 1024
SecArgumentsLimit 1000
SecResponseBodyAccess Off
SecAuditEngine Off
SecRxPreFilter Off
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQUEST_HEADERS:Content-Type "^application/[a-z0-9.-]+[+]json" "id:200006,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}',severity:2"
SecRule MULTIPART_STRICT_ERROR "!@eq 0" "id:200003,phase:2,t:none,log,deny,status:400,msg:'Multipart request body failed strict validation.'"
SecRule &ARGS "@ge 1000" "id:200007,phase:2,t:none,log,deny,status:400,msg:'Failed to fully parse request body due to large argument count',severity:2"
`

// crsSettingsTemplate sets the CRS variables the settings control (paranoia level and
// inbound anomaly threshold) and the gateway's CRS defaults; it stands in for the
// SecActions of crs-setup.conf. An API gateway allows the REST methods (PUT, PATCH,
// DELETE) and the JSON patch media types besides the CRS defaults.
const crsSettingsTemplate = `SecDefaultAction "phase:1,log,auditlog,pass"
SecDefaultAction "phase:2,log,auditlog,pass"
SecAction "id:900000,phase:1,pass,t:none,nolog,tag:'OWASP_CRS',setvar:tx.blocking_paranoia_level=%d"
SecAction "id:900110,phase:1,pass,t:none,nolog,tag:'OWASP_CRS',setvar:tx.inbound_anomaly_score_threshold=%d,setvar:tx.outbound_anomaly_score_threshold=4"
SecAction "id:900200,phase:1,pass,t:none,nolog,tag:'OWASP_CRS',setvar:'tx.allowed_methods=GET HEAD POST OPTIONS PUT PATCH DELETE'"
SecAction "id:900220,phase:1,pass,t:none,nolog,tag:'OWASP_CRS',setvar:'tx.allowed_request_content_type=|application/x-www-form-urlencoded| |multipart/form-data| |text/xml| |application/xml| |application/soap+xml| |application/json| |application/merge-patch+json| |application/json-patch+json| |application/problem+json| |application/cloudevents+json|'"
SecAction "id:900990,phase:1,pass,t:none,nolog,tag:'OWASP_CRS',setvar:tx.crs_setup_version=4250"
`

// crsMarker stands for the CRS request rules in the final directives (and so in the
// ruleset key): REQUEST-*.conf of the embedded coreruleset, with @rx served by the
// gateway's prefiltered operator (crs.go). Response rules (RESPONSE-95x, 980
// correlation) are left out: ext_authz never sees a response.
const crsMarker = "# OWASP CRS " + CRSVersion + " request rules (REQUEST-*.conf, @rx -> @" + rxOperatorName + ")"

// CRSVersion is the Core Rule Set version embedded in the binary.
const CRSVersion = "v4.25.0"
