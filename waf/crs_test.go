package waf

import (
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	crstests "github.com/corazawaf/coraza-coreruleset/v4/tests"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/goccy/go-yaml"

	"github.com/api-gateway/api-gateway/model"
)

// crsTestSettings mirrors the configuration the CRS regression suite is written against
// (CRS tests/regression README, rule 900005, as Coraza's testing/coreruleset uses it):
// DetectionOnly, blocking paranoia level 4, UTF-8 validation and the argument limits; the
// allowed methods and content types go back to the CRS defaults the tests expect.
const crsTestSettings = `SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=910000,setvar:tx.blocking_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535,setvar:'tx.allowed_methods=GET HEAD POST OPTIONS',setvar:'tx.allowed_request_content_type=|application/x-www-form-urlencoded| |multipart/form-data| |text/xml| |application/xml| |application/soap+xml| |application/json|'"
`

// ftw test file format (go-ftw), the parts request tests use.
type ftwFile struct {
	RuleID int       `yaml:"rule_id"`
	Tests  []ftwTest `yaml:"tests"`
}

type ftwTest struct {
	TestID int        `yaml:"test_id"`
	Stages []ftwStage `yaml:"stages"`
}

type ftwStage struct {
	Input  ftwInput  `yaml:"input"`
	Output ftwOutput `yaml:"output"`
}

type ftwInput struct {
	DestAddr            *string           `yaml:"dest_addr"`
	Port                *int              `yaml:"port"`
	Method              *string           `yaml:"method"`
	URI                 *string           `yaml:"uri"`
	Version             *string           `yaml:"version"`
	Headers             map[string]string `yaml:"headers"`
	Data                *string           `yaml:"data"`
	EncodedRequest      string            `yaml:"encoded_request"`
	AutocompleteHeaders *bool             `yaml:"autocomplete_headers"`
}

type ftwOutput struct {
	Log         ftwLog `yaml:"log"`
	Status      int    `yaml:"status"`
	ExpectError bool   `yaml:"expect_error"`
}

type ftwLog struct {
	ExpectIDs    []int  `yaml:"expect_ids"`
	NoExpectIDs  []int  `yaml:"no_expect_ids"`
	MatchRegex   string `yaml:"match_regex"`
	NoMatchRegex string `yaml:"no_match_regex"`
}

// crsOverrides is crs-overrides.yaml: tests skipped or with changed expectations.
type crsOverrides struct {
	Skip []struct {
		Test   string `yaml:"test"`
		Reason string `yaml:"reason"`
	} `yaml:"skip"`
	Override []struct {
		Test   string `yaml:"test"`
		Reason string `yaml:"reason"`
		Log    ftwLog `yaml:"log"`
	} `yaml:"override"`
}

// crsCase is one stage of one CRS test, ready to run.
type crsCase struct {
	file  string // rule file directory, e.g. REQUEST-942-APPLICATION-ATTACK-SQLI
	name  string // <rule>-<test>[/stage]
	input ftwInput
	want  ftwLog
}

func loadCRSCases(t testing.TB) (cases []crsCase, skipped map[string]string) {
	t.Helper()
	var ov crsOverrides
	raw, err := os.ReadFile("crs-overrides.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &ov); err != nil {
		t.Fatalf("crs-overrides.yaml: %v", err)
	}
	skipped = map[string]string{}
	for _, s := range ov.Skip {
		if s.Reason == "" {
			t.Fatalf("crs-overrides.yaml: skip %s has no reason", s.Test)
		}
		skipped[s.Test] = s.Reason
	}
	overrides := map[string]ftwLog{}
	for _, o := range ov.Override {
		if o.Reason == "" {
			t.Fatalf("crs-overrides.yaml: override %s has no reason", o.Test)
		}
		overrides[o.Test] = o.Log
	}
	used := map[string]bool{}
	err = fs.WalkDir(crstests.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		dir := path.Dir(p)
		if strings.HasPrefix(dir, "RESPONSE-") {
			return nil // ext_authz never sees a response
		}
		b, err := fs.ReadFile(crstests.FS, p)
		if err != nil {
			return err
		}
		var f ftwFile
		if err := yaml.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		for _, tc := range f.Tests {
			name := fmt.Sprintf("%d-%d", f.RuleID, tc.TestID)
			if _, ok := skipped[name]; ok {
				used[name] = true
				continue
			}
			for i, st := range tc.Stages {
				c := crsCase{file: dir, name: name, input: st.Input, want: st.Output.Log}
				if len(tc.Stages) > 1 {
					c.name = fmt.Sprintf("%s/%d", name, i+1)
				}
				if o, ok := overrides[name]; ok {
					c.want = o
					used[name] = true
				}
				cases = append(cases, c)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range skipped {
		if !used[name] {
			t.Errorf("crs-overrides.yaml: skip %s matches no test", name)
		}
	}
	for name := range overrides {
		if !used[name] {
			t.Errorf("crs-overrides.yaml: override %s matches no test", name)
		}
	}
	return cases, skipped
}

// buildRaw turns a test input into the request go-ftw would send.
func buildRaw(in ftwInput) (rawRequest, error) {
	r := rawRequest{srcIP: "127.0.0.1", srcPort: 40000, dstIP: "127.0.0.1", dstPort: 80}
	if in.DestAddr != nil {
		r.dstIP = *in.DestAddr
	}
	if in.Port != nil {
		r.dstPort = *in.Port
	}
	if in.EncodedRequest != "" {
		dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(in.EncodedRequest, "\n", ""))
		if err != nil {
			return r, fmt.Errorf("encoded_request: %w", err)
		}
		p, err := parseRawRequest(dec)
		if err != nil {
			return r, err
		}
		p.srcIP, p.srcPort, p.dstIP, p.dstPort = r.srcIP, r.srcPort, r.dstIP, r.dstPort
		return p, nil
	}
	r.method, r.uri, r.version = "GET", "/", "HTTP/1.1"
	if in.Method != nil {
		r.method = *in.Method
	}
	if in.URI != nil {
		r.uri = *in.URI
	}
	if in.Version != nil {
		r.version = *in.Version
	}
	h := map[string]string{} // go-ftw's header map: one value per exact name
	for k, v := range in.Headers {
		h[k] = v
	}
	var data []byte
	if in.Data != nil {
		data = []byte(*in.Data)
	}
	autocomplete := in.AutocompleteHeaders == nil || *in.AutocompleteHeaders
	addIfMissing := func(k, v string) {
		if h[k] == "" {
			h[k] = v
		}
	}
	if len(data) > 0 && autocomplete {
		addIfMissing("Content-Type", "application/x-www-form-urlencoded")
		if h["Content-Type"] == "application/x-www-form-urlencoded" {
			data = encodeFormData(data)
		}
	}
	if strings.HasPrefix(h["Content-Type"], "multipart/form-data;") {
		data = []byte(strings.ReplaceAll(string(data), "\n", "\r\n"))
	}
	if autocomplete {
		addIfMissing("Connection", "close")
		if len(data) > 0 || ftwBodyMethod.MatchString(r.method) {
			addIfMissing("Content-Length", fmt.Sprint(len(data)))
		}
	}
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		r.headers = append(r.headers, [2]string{k, h[k]})
	}
	r.body = data
	return r, nil
}

// ftwBodyMethod is go-ftw's (loosely anchored) check for methods that carry a body.
var ftwBodyMethod = regexp.MustCompile(`^POST|PUT|PATCH|DELETE$`)

type crsResult struct {
	c      crsCase
	ok     bool
	reason string
}

func runCRSCase(w *WAF, c crsCase, i int) crsResult {
	r, err := buildRaw(c.input)
	if err != nil {
		return crsResult{c: c, reason: err.Error()}
	}
	req := checkRequest(r, fmt.Sprintf("crs-%d", i))
	var log strings.Builder
	var ids []int
	w.inspect(context.Background(), req, func(mrs []types.MatchedRule) {
		for _, mr := range mrs {
			if lf, ok := mr.(logFlag); ok && !lf.Log() {
				continue
			}
			ids = append(ids, mr.Rule().ID())
			if c.want.MatchRegex != "" || c.want.NoMatchRegex != "" {
				log.WriteString(mr.ErrorLog())
				log.WriteByte('\n')
			}
		}
	})
	var problems []string
	for _, id := range c.want.ExpectIDs {
		if !slices.Contains(ids, id) {
			problems = append(problems, fmt.Sprintf("expected %d", id))
		}
	}
	for _, id := range c.want.NoExpectIDs {
		if slices.Contains(ids, id) {
			problems = append(problems, fmt.Sprintf("unexpected %d", id))
		}
	}
	if c.want.MatchRegex != "" && !regexp.MustCompile(c.want.MatchRegex).MatchString(log.String()) {
		problems = append(problems, fmt.Sprintf("log does not match %q", c.want.MatchRegex))
	}
	if c.want.NoMatchRegex != "" && regexp.MustCompile(c.want.NoMatchRegex).MatchString(log.String()) {
		problems = append(problems, fmt.Sprintf("log matches %q", c.want.NoMatchRegex))
	}
	if len(problems) > 0 {
		return crsResult{c: c, reason: fmt.Sprintf("%s (matched %v)", strings.Join(problems, ", "), ids)}
	}
	return crsResult{c: c, ok: true}
}

// crsTestWAF compiles the WAF the regression suite runs against: the production ruleset
// at paranoia level 4 (every CRS request rule) with the regression suite's test settings
// as custom rules.
func crsTestWAF(t testing.TB) *WAF {
	t.Helper()
	cfg := ConfigFromSettings(&model.WAFSettings{ParanoiaLevel: 4, CustomRules: crsTestSettings})
	w, err := Compile(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestCRSRegression replays every request-side CRS regression test through the Envoy
// Check adapter and compares the matched rule ids with the test's expectations.
func TestCRSRegression(t *testing.T) {
	start := time.Now()
	cases, skipped := loadCRSCases(t)
	if raceEnabled {
		// The race detector makes the full suite take minutes: run every 8th test, still
		// on parallel workers sharing one WAF.
		var sample []crsCase
		for i := 0; i < len(cases); i += 8 {
			sample = append(sample, cases[i])
		}
		cases = sample
	}
	w := crsTestWAF(t)
	compiled := time.Now()

	results := make([]crsResult, len(cases))
	parallelEach(len(cases), func(i int) { results[i] = runCRSCase(w, cases[i], i) })

	type tally struct{ pass, total int }
	perFile := map[string]*tally{}
	var files []string
	pass := 0
	var failed []crsResult
	for _, r := range results {
		tl := perFile[r.c.file]
		if tl == nil {
			tl = &tally{}
			perFile[r.c.file] = tl
			files = append(files, r.c.file)
		}
		tl.total++
		if r.ok {
			tl.pass++
			pass++
		} else {
			failed = append(failed, r)
		}
	}
	sort.Strings(files)
	for _, f := range files {
		tl := perFile[f]
		t.Logf("%-45s %4d/%4d  %6.2f%%", f, tl.pass, tl.total, 100*float64(tl.pass)/float64(tl.total))
	}
	rate := 100 * float64(pass) / float64(len(results))
	t.Logf("CRS regression total: %d/%d passed (%.2f%%), %d tests skipped; compile %s, run %s on %d cores",
		pass, len(results), rate, len(skipped), compiled.Sub(start).Round(time.Millisecond),
		time.Since(compiled).Round(time.Millisecond), runtime.GOMAXPROCS(0))
	for _, r := range failed {
		t.Logf("FAIL %s (%s): %s", r.c.name, r.c.file, r.reason)
	}
	if len(skipped) > 60 {
		t.Errorf("%d tests skipped, at most 60 allowed", len(skipped))
	}
	if len(results) < 4000 && !raceEnabled {
		t.Errorf("only %d request test stages found", len(results))
	}
	if rate < 99 {
		t.Errorf("pass rate %.2f%% is under 99%%", rate)
	}
}

// parallelEach calls fn(0) … fn(n-1) on GOMAXPROCS goroutines and returns when all are done.
func parallelEach(n int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// reportDiffs fails t with the first 20 differences.
func reportDiffs(t *testing.T, diffs []string) {
	t.Helper()
	for i, d := range diffs {
		if i == 20 {
			t.Errorf("... %d more", len(diffs)-20)
			return
		}
		t.Error(d)
	}
}
