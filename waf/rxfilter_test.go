package waf

import (
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestRxFilterCases(t *testing.T) {
	cases := []struct {
		pattern string
		match   []string // must pass the filter (the regexp matches them)
		reject  []string // the filter may reject these
	}{
		// The shape Coraza v3.8.1's SecRxPreFilter gets wrong (CRS 942220): a factored
		// prefix followed by a branch that starts with a wildcard.
		{`(?i)^(?:429496729[56]|2(?:14748364[78]|.22507385850720(?:07|11)e-308)|1e309)$`,
			[]string{"2.2250738585072011e-308", "2x2250738585072007e-308", "4294967295", "1E309"},
			[]string{"hello", "2250738585072011"}},
		// CRS 932311 shape: the branch's literal is not adjacent to the factored prefix.
		{`(?is)\r\n[0-9A-Z_a-z]{1,50}\b (?:S(?:T(?:ORE [\*,0-:]+? [\+\-]?FLAGS(?:\.SILENT)?|ARTTLS)|NOOP))`,
			[]string{"\r\nd store 2 +FLAGS (\\Deleted)", "\r\na1 STARTTLS", "\r\nx snoop"},
			[]string{"store flags", "plain text"}},
		{`union.*select`, []string{"union all select"}, []string{"select union", "unio select"}},
		{`(?i)<script[^>]*>`, []string{"<SCRIPT src=x>", "<script>"}, []string{"script", "<scrip>"}},
		{`['";=]`, []string{"a'b", "x=1"}, []string{"abc"}},
		{`(?:foo|ba[rz])+qux`, []string{"fooqux", "barbazqux"}, []string{"qux", "foo"}},
		{`a(?:b|)c`, []string{"ac", "abc"}, nil},
		{`^$`, []string{""}, nil},
		{`(?i)kelvin`, []string{"\u212aelvin", "KELVIN"}, []string{"elvin"}},
	}
	for _, c := range cases {
		re := regexp.MustCompile("(?sm)" + c.pattern)
		f := newRxFilter("(?sm)" + c.pattern)
		for _, s := range c.match {
			if !re.MatchString(s) {
				t.Fatalf("bad case: %q does not match %q", c.pattern, s)
			}
			if f != nil && !f.mayMatch(s) {
				t.Errorf("filter of %q rejects matching input %q", c.pattern, s)
			}
		}
		for _, s := range c.reject {
			if re.MatchString(s) {
				t.Fatalf("bad case: %q matches %q", c.pattern, s)
			}
		}
		if len(c.reject) > 0 && f == nil {
			t.Errorf("no filter for %q", c.pattern)
		}
	}
}

// TestRxFilterSoundOnCRSPayloads checks the filter of every CRS @rx pattern against the
// payloads of the CRS regression tests (raw and URL-decoded): whenever the
// expression matches, the filter must let it through.
func TestRxFilterSoundOnCRSPayloads(t *testing.T) {
	rules, err := crsRequestRules(maxParanoiaLevel)
	if err != nil {
		t.Fatal(err)
	}
	patterns := map[string]bool{}
	for _, line := range strings.Split(strings.ReplaceAll(rules, "\\\n", ""), "\n") {
		i := strings.Index(line, `"@`+rxOperatorName+" ")
		if i < 0 {
			continue
		}
		p, ok := quotedOperand(line[i+len(rxOperatorName)+3:])
		if ok {
			patterns["(?sm)"+p] = true
		}
	}
	if len(patterns) < 150 {
		t.Fatalf("found only %d CRS patterns", len(patterns))
	}
	cases, _ := loadCRSCases(t)
	seen := map[string]bool{}
	var inputs []string
	add := func(s string) {
		if s != "" && len(s) < 4096 && !seen[s] {
			seen[s] = true
			inputs = append(inputs, s)
		}
	}
	for _, c := range cases {
		var parts []string
		if c.input.URI != nil {
			parts = append(parts, *c.input.URI)
		}
		if c.input.Data != nil {
			parts = append(parts, *c.input.Data)
		}
		for _, k := range slices.Sorted(maps.Keys(c.input.Headers)) {
			parts = append(parts, c.input.Headers[k])
		}
		for _, p := range parts {
			add(p)
			if d, err := url.QueryUnescape(p); err == nil {
				add(d)
			}
		}
	}
	// Every second payload keeps the test to a few seconds (each rejection runs the
	// expression); the full set gives the same result.
	var sample []string
	for i := 0; i < len(inputs); i += 2 {
		sample = append(sample, inputs[i])
	}
	inputs = sample
	checked, rejected := 0, 0
	for p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			continue
		}
		f := newRxFilter(p)
		if f == nil {
			continue
		}
		for _, s := range inputs {
			if f.mayMatch(s) {
				continue
			}
			rejected++
			if re.MatchString(s) {
				t.Errorf("filter rejects an input its expression matches:\npattern %q\ninput %q", p, s)
			}
		}
		checked++
	}
	t.Logf("%d CRS patterns with a filter, %d payloads, %d rejections verified against the expression", checked, len(inputs), rejected)
}

// quotedOperand reads a SecLang operand up to its closing quote, unescaping \".
func quotedOperand(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			b.WriteByte('\\')
		case '"':
			return b.String(), true
		default:
			b.WriteByte(s[i])
		}
	}
	return "", false
}
