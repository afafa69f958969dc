package waf

import (
	"context"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/corazawaf/coraza/v3/types"

	"github.com/api-gateway/api-gateway/model"
)

// withoutScreen returns cfg's sections with the request screen turned off.
func withoutScreen(cfg Config) []section {
	secs := cfg.sections()
	for i := range secs {
		secs[i].screen = false
	}
	return secs
}

// matchedIDs runs req through w and returns every matched rule id (logged or not) and the
// verdict.
func matchedIDs(w *WAF, raw rawRequest, id string) ([]int, Verdict) {
	var ids []int
	v := w.inspect(context.Background(), checkRequest(raw, id), func(mrs []types.MatchedRule) {
		for _, mr := range mrs {
			ids = append(ids, mr.Rule().ID())
		}
	})
	slices.Sort(ids)
	v.Err = nil
	return ids, v
}

// screenCorpus is every CRS regression payload, the benign corpus and the benchmark
// requests (plain and salted).
func screenCorpus(t *testing.T) (names []string, raws []rawRequest) {
	cases, _ := loadCRSCases(t)
	for _, c := range cases {
		r, err := buildRaw(c.input)
		if err != nil {
			continue
		}
		names, raws = append(names, c.name), append(raws, r)
	}
	for name, r := range benignCorpus() {
		names, raws = append(names, "benign "+name), append(raws, r.raw())
	}
	for _, salt := range []string{"", " r1", "%27 OR 1=1--", "<script>", "Ｓｃｒｉｐｔ", "ſelect"} {
		for _, br := range saltedBenchRequests(salt) {
			names, raws = append(names, fmt.Sprintf("bench %s salt %q", br.name, salt)), append(raws, br.raw())
		}
	}
	return names, raws
}

// TestScreenSameMatches is the screen's soundness check: with and without it, every
// payload of the CRS regression suite (and the benign and benchmark requests) matches
// exactly the same rules, at paranoia level 1 (the default) and 4 (every CRS rule, with
// the regression suite's settings).
func TestScreenSameMatches(t *testing.T) {
	names, raws := screenCorpus(t)
	if raceEnabled {
		var n []string
		var r []rawRequest
		for i := 0; i < len(raws); i += 8 {
			n, r = append(n, names[i]), append(r, raws[i])
		}
		names, raws = n, r
	}
	for _, tc := range []struct {
		name string
		s    model.WAFSettings
		pl   int // CRS text: pruned to this paranoia level (0: the settings' level)
	}{
		{"paranoia 1", model.WAFSettings{Mode: model.WAFModeDetect}, 0},
		// The whole CRS at paranoia 1: rules of higher levels sit behind their guards
		// (skipAfter), and a skip:1 rule precedes a guard.
		{"paranoia 1, whole CRS text", model.WAFSettings{Mode: model.WAFModeDetect}, maxParanoiaLevel},
		{"paranoia 4, CRS test settings", model.WAFSettings{ParanoiaLevel: 4, CustomRules: crsTestSettings}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ConfigFromSettings(&tc.s)
			if !cfg.screenable() {
				t.Fatal("settings not screenable")
			}
			pl := cfg.prunableLevel()
			if tc.pl != 0 {
				pl = tc.pl
			}
			screened, err := compile(cfg, pl, quiet)
			if err != nil {
				t.Fatal(err)
			}
			plain, err := compileSecs(cfg, withoutScreen(cfg), pl, quiet)
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu       sync.Mutex
				diffs    []string
				detected int
			)
			parallelEach(len(raws), func(i int) {
				id := fmt.Sprintf("screen-%d", i)
				a, va := matchedIDs(screened, raws[i], id)
				b, vb := matchedIDs(plain, raws[i], id)
				mu.Lock()
				defer mu.Unlock()
				if !slices.Equal(a, b) || !reflect.DeepEqual(va, vb) {
					diffs = append(diffs, fmt.Sprintf("%s: screened %v %+v, plain %v %+v", names[i], a, va, b, vb))
				}
				if slices.ContainsFunc(b, func(id int) bool { return id >= 911000 && id < 949000 }) {
					detected++ // a CRS detection rule matched
				}
			})
			reportDiffs(t, diffs)
			t.Logf("%d requests, %d detected, %d with different matches", len(raws), detected, len(diffs))
			if detected < len(raws)/3 {
				t.Errorf("only %d of %d requests detected: the comparison is too weak", detected, len(raws))
			}
		})
	}
}

// TestScreenPlanCoversCRS checks the plan the screen builds from the CRS: every @rx rule
// parsed to the pattern the gateway operator compiled (a mismatch would leave the rule
// unscreened, silently), and most pattern rules are screened.
func TestScreenPlanCoversCRS(t *testing.T) {
	if _, err := Compile(ConfigFromSettings(&model.WAFSettings{}), quiet); err != nil {
		t.Fatal(err)
	}
	p := buildScreenPlan(mustCRS(t, 1))
	n := len(p.phases[1].rules) + len(p.phases[2].rules)
	t.Logf("paranoia 1: %d rules screened (phase 1: %d, phase 2: %d); not screened: %v",
		n, len(p.phases[1].rules), len(p.phases[2].rules), p.skipped)
	if c := p.skipped["@rx not compiled by the gateway operator"]; c > 0 {
		t.Errorf("%d @rx rules parsed to a pattern the operator did not compile", c)
	}
	if n < 100 {
		t.Errorf("only %d rules screened", n)
	}
}

func mustCRS(t *testing.T, pl int) string {
	t.Helper()
	text, err := crsRequestRules(pl)
	if err != nil {
		t.Fatal(err)
	}
	return text
}

// TestScreenRemovesRules checks that the screen does its job on ordinary requests: most
// screened rules are removed, and an attack keeps the rule that detects it.
func TestScreenRemovesRules(t *testing.T) {
	w, err := Compile(ConfigFromSettings(&model.WAFSettings{}), quiet)
	if err != nil {
		t.Fatal(err)
	}
	p := screenPlanFor(1)
	total := len(p.phases[1].rules) + len(p.phases[2].rules)
	kept := map[int]bool{}
	screenObserver = func(id int) { kept[id] = true }
	defer func() { screenObserver = nil }()
	for _, br := range benchRequests() {
		clear(kept)
		w.Inspect(context.Background(), checkRequest(br.raw(), "screen"))
		t.Logf("%s: %d of %d screened rules kept", br.name, len(kept), total)
		if len(kept) > total/3 {
			t.Errorf("%s: %d of %d rules kept", br.name, len(kept), total)
		}
	}
	clear(kept)
	attack := req{uri: "/search?q=" + url.QueryEscape("1' UNION SELECT password FROM users--")}
	ids, _ := matchedIDs(w, attack.raw(), "screen-attack")
	if !kept[942100] && !slices.Contains(ids, 942100) || len(ids) == 0 {
		t.Errorf("attack matched %v", ids)
	}
}

// TestScreenTransformations checks every transformation the screen handles against
// Coraza's: the exact ones give the same result, and the others leave a value without
// their trigger bytes unchanged, on every CRS payload value and some edge cases.
func TestScreenTransformations(t *testing.T) {
	values := []string{"", " ", "a", "\x00", "a\x00b", "/*", "*/", "/**/", "a/*b*/c", "a/*b", "--", "<!--x-->",
		"#x", "\xa0", "a\u00a0\u0085b", "\xc2", "x\xa0\xa0y", "A  B\t\nC", "Cat /etc/passwd", "a ,; b", "x (y)",
		"\"q'u^o\\te", "/", ".", "..", "a/./b/../c/", "//x//", "C:\\x\\..\\y", "&lt;&#x3c;&amp", "&quot",
		"\u017fcript", "\u212aey", "ÀÉÎÕÜ", "%41%u0041+", "\\u0041\\x41", "é\x00ü", "%u", "%uZZ12",
		"%u00e9%U0041%", "%4", "%zz%2", "\U0001F600 😀", "\xff\xfe", "Ｓｃｒｉｐｔ＜＞", "%uff1cscript%uFF1E", "a+b%20c"}
	cases, _ := loadCRSCases(t)
	for _, c := range cases {
		r, err := buildRaw(c.input)
		if err != nil {
			continue
		}
		if q, err := url.ParseQuery(strings.SplitN(r.uri, "?", 2)[len(strings.SplitN(r.uri, "?", 2))-1]); err == nil {
			for _, vs := range q {
				values = append(values, vs...)
			}
		}
		if len(r.body) > 0 && len(r.body) < 4096 {
			values = append(values, string(r.body))
		}
	}
	if raceEnabled {
		values = values[:min(len(values), 400)]
	}
	for name, checked := range checkStepsAgainstCoraza(t, values) {
		if checked < 50 {
			t.Errorf("%s: only %d values checked", name, checked)
		}
	}
	if uniBytes() == nil {
		t.Error("Coraza's %u decoding table could not be read")
	}
}

// checkStepsAgainstCoraza runs every value through each screen step and, where the step
// gives an answer, through Coraza's transformation of the same name; they must agree. It
// returns how many values each step answered.
func checkStepsAgainstCoraza(t *testing.T, values []string) map[string]int {
	t.Helper()
	names := make([]string, 0, len(screenSteps))
	for name := range screenSteps {
		names = append(names, name)
	}
	slices.Sort(names)
	checked := map[string]int{}
	for _, name := range names {
		bad := 0
		for _, v := range values {
			got, ok := screenSteps[name](v)
			if !ok {
				continue
			}
			checked[name]++
			want, err := corazaTransform(name, v)
			if err != nil {
				t.Fatalf("%s(%q): %v", name, v, err)
			}
			if got != want && bad < 5 {
				bad++
				t.Errorf("%s(%q) = %q, Coraza %q", name, v, got, want)
			}
		}
	}
	return checked
}
