package waf

import (
	"strings"

	"github.com/corazawaf/coraza/v3/types"
)

// Verdict is the WAF's decision on one request.
type Verdict struct {
	// Allowed is false when the request must be denied (never false in detect mode).
	Allowed bool
	// Detected is true when the request was flagged: blocked, or in detect mode would
	// have been blocked.
	Detected bool
	// Status is the HTTP status to deny with (403, 400 for a body Coraza cannot parse,
	// 413 for a body over max_request_body_size, 431 for headers over max_header_size).
	// It is set whenever Detected is true.
	Status int
	// RuleID is the rule that decided (949110 for the CRS anomaly evaluation, a custom
	// rule's id, 200002 for a bad body); 0 for the gateway's own size limits.
	RuleID int
	// RuleIDs lists every logged rule that matched, in match order.
	RuleIDs []int
	// Category classifies the attack (see Category* constants); "" when nothing matched.
	Category string
	// AnomalyScore is the CRS inbound anomaly score at the blocking paranoia level.
	AnomalyScore int
	// Message is a short human readable reason ("" when nothing was detected).
	Message string
	// Err is set when the request could not be inspected (the verdict then fails closed
	// in block mode: Allowed is false with Status 500).
	Err error
}

// Categories reported in Verdict.Category and the threats metric.
const (
	CategorySQLi            = "sqli"
	CategoryXSS             = "xss"
	CategoryLFI             = "lfi"
	CategoryRFI             = "rfi"
	CategoryRCE             = "rce"
	CategoryPHP             = "php"
	CategoryJava            = "java"
	CategoryNodeJS          = "nodejs"
	CategorySSRF            = "ssrf"
	CategorySessionFixation = "session-fixation"
	CategoryProtocol        = "protocol"
	CategoryMethod          = "method"
	CategoryMultipart       = "multipart"
	CategoryScanner         = "scanner"
	CategoryGeneric         = "generic"
	CategoryLimits          = "limits"
	CategoryCustom          = "custom"
	CategoryAnomaly         = "anomaly"
)

// tagCategories maps CRS attack tags to categories; the most specific tags come first.
var tagCategories = []struct{ tag, category string }{
	{"attack-sqli", CategorySQLi},
	{"attack-xss", CategoryXSS},
	{"attack-lfi", CategoryLFI},
	{"attack-rfi", CategoryRFI},
	{"attack-ssrf", CategorySSRF},
	{"attack-rce", CategoryRCE},
	{"attack-injection-php", CategoryPHP},
	{"attack-java", CategoryJava},
	{"attack-nodejs", CategoryNodeJS},
	{"attack-fixation", CategorySessionFixation},
	{"attack-reputation-scanner", CategoryScanner},
	{"attack-multipart-header", CategoryMultipart},
	{"attack-protocol", CategoryProtocol},
	{"attack-generic", CategoryGeneric},
}

// RuleCategory classifies one rule: CRS rules by the file their id belongs to (934xxx,
// the generic attacks file, by its tags: ssrf, nodejs, ...), other rules by their tags,
// else as custom.
func RuleCategory(r types.RuleMetadata) string {
	id := r.ID()
	if c := categoryByID(id); (id >= 900000 && id < 1000000 && !(id >= 934000 && id < 935000)) || (id >= 200000 && id < 200100) {
		return c
	}
	tags := r.Tags()
	for _, tc := range tagCategories {
		for _, t := range tags {
			if strings.EqualFold(t, tc.tag) {
				return tc.category
			}
		}
	}
	return categoryByID(id)
}

// weakCategories describe how a request is malformed rather than an attack; a verdict
// names an attack category when any matched rule has one.
var weakCategories = map[string]bool{CategoryProtocol: true, CategoryMethod: true, CategoryGeneric: true,
	CategoryAnomaly: true, CategoryMultipart: true}

// pickCategory chooses the verdict's category from the matched rules' categories: attack
// categories over protocol ones, then the most frequent, then the first.
func pickCategory(cats []string) string {
	best, bestN, bestStrong := "", 0, false
	counts := map[string]int{}
	for _, c := range cats {
		counts[c]++
	}
	for _, c := range cats {
		strong := !weakCategories[c]
		n := counts[c]
		if best == "" || (strong && !bestStrong) || (strong == bestStrong && n > bestN) {
			best, bestN, bestStrong = c, n, strong
		}
	}
	return best
}

// categoryByID classifies by the CRS file a rule id belongs to.
func categoryByID(id int) string {
	switch {
	case id >= 200000 && id < 200100:
		return CategoryProtocol // Coraza body processor errors
	case id >= 911000 && id < 912000:
		return CategoryMethod
	case id >= 913000 && id < 914000:
		return CategoryScanner
	case id >= 920000 && id < 922000:
		return CategoryProtocol
	case id >= 922000 && id < 923000:
		return CategoryMultipart
	case id >= 930000 && id < 931000:
		return CategoryLFI
	case id >= 931000 && id < 932000:
		return CategoryRFI
	case id >= 932000 && id < 933000:
		return CategoryRCE
	case id >= 933000 && id < 934000:
		return CategoryPHP
	case id >= 934000 && id < 935000:
		return CategoryGeneric
	case id >= 941000 && id < 942000:
		return CategoryXSS
	case id >= 942000 && id < 943000:
		return CategorySQLi
	case id >= 943000 && id < 944000:
		return CategorySessionFixation
	case id >= 944000 && id < 945000:
		return CategoryJava
	case id >= 949000 && id < 950000:
		return CategoryAnomaly
	case id >= 900000 && id < 1000000:
		return "" // CRS initialization and bookkeeping
	default:
		return CategoryCustom
	}
}

// isEvaluationRule reports rules that only sum up other matches (CRS 949xxx blocking
// evaluation); they are not threats of their own.
func isEvaluationRule(id int) bool {
	return id >= 949000 && id < 950000
}
