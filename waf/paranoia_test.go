package waf

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/corazawaf/coraza/v3/types"

	"github.com/api-gateway/api-gateway/model"
)

// ruleTags compiles cfg's ruleset pruned to pl and returns the tags of every rule by id.
func ruleTags(t *testing.T, cfg Config, pl int) map[int][]string {
	t.Helper()
	tags := map[int][]string{}
	e, err := compileSections(cfg.sections(), pl, func(r types.RuleMetadata) {
		tags[r.ID()] = r.Tags()
	})
	if err != nil {
		t.Fatal(err)
	}
	closeEngine(e)
	return tags
}

// paranoiaTag is the N of a rule's paranoia-level/N tag (0 when it has none).
func paranoiaTag(tags []string) int {
	for _, tag := range tags {
		if n, ok := strings.CutPrefix(tag, "paranoia-level/"); ok {
			v, _ := strconv.Atoi(n)
			return v
		}
	}
	return 0
}

// TestParanoiaPruningFollowsTags checks the structural pruning against the CRS tags: at
// paranoia level pl the pruned ruleset has every rule of the full one except exactly
// the rules tagged paranoia-level/N with N > pl and their "@lt N" guards.
func TestParanoiaPruningFollowsTags(t *testing.T) {
	cfg := ConfigFromSettings(&model.WAFSettings{})
	full := ruleTags(t, cfg, maxParanoiaLevel)
	for pl := 1; pl < maxParanoiaLevel; pl++ {
		kept := ruleTags(t, cfg, pl)
		guards := map[int]bool{}
		prunedIDs := map[int]bool{}
		for _, p := range crsRules(pl).pruned {
			if p.guard {
				guards[p.id] = true
			}
			if p.id != 0 {
				prunedIDs[p.id] = true
			}
		}
		removed := 0
		for id, tags := range full {
			n := paranoiaTag(tags)
			_, isKept := kept[id]
			switch {
			case isKept && n > pl:
				t.Errorf("pl %d: rule %d (paranoia-level/%d) was kept", pl, id, n)
			case !isKept && !prunedIDs[id]:
				t.Errorf("pl %d: rule %d vanished without being pruned", pl, id)
			case !isKept && !guards[id] && n != 0 && n <= pl:
				t.Errorf("pl %d: rule %d (paranoia-level/%d) was pruned", pl, id, n)
			case !isKept && !guards[id] && n == 0:
				// A helper rule without a paranoia tag inside a guarded block (921170
				// counts parameters for 921180 at paranoia level 3).
				t.Logf("pl %d: untagged rule %d pruned with its paranoia block", pl, id)
				removed++
			case !isKept:
				removed++
			}
		}
		for id := range kept {
			if _, ok := full[id]; !ok {
				t.Errorf("pl %d: rule %d is not in the full ruleset", pl, id)
			}
		}
		if removed == 0 {
			t.Errorf("pl %d: nothing pruned", pl)
		}
		t.Logf("paranoia level %d: %d of %d rules kept (%d pruned, guards included)", pl, len(kept), len(full), removed)
	}
}

func TestPrunableLevel(t *testing.T) {
	for _, tc := range []struct {
		s    model.WAFSettings
		want int
	}{
		{model.WAFSettings{}, 1},
		{model.WAFSettings{ParanoiaLevel: 2}, 2},
		{model.WAFSettings{ParanoiaLevel: 4}, 4},
		{model.WAFSettings{CustomRules: `SecAction "id:1,phase:1,pass,nolog,setvar:tx.detection_paranoia_level=3"`}, 4},
		{model.WAFSettings{CustomRulesAfterCRS: `SecRuleUpdateTargetById 942200 "!ARGS:foo"`}, 4},
		{model.WAFSettings{CustomRules: `SecAction "id:1,phase:1,pass,nolog,setvar:'tx.%{tx.name}=3'"`}, 4},
		{model.WAFSettings{CustomRules: `SecRule ARGS:x "@streq y" "id:1,phase:1,deny,setvar:tx.score=+%{tx.x}"`}, 1},
	} {
		if got := ConfigFromSettings(&tc.s).prunableLevel(); got != tc.want {
			t.Errorf("%+v: prunable level %d, want %d", tc.s, got, tc.want)
		}
	}
	// A rule update on a paranoia level 2 rule still compiles at paranoia level 1.
	if errs := ValidateSettings(&model.WAFSettings{CustomRulesAfterCRS: `SecRuleUpdateTargetById 942200 "!ARGS:foo"`}); len(errs) > 0 {
		t.Errorf("update of a paranoia level 2 rule: %v", errs)
	}
}

func TestPruneParanoiaRejectsUnguardedPhase(t *testing.T) {
	conf := `SecRule TX:DETECTION_PARANOIA_LEVEL "@lt 2" "id:1,phase:1,pass,nolog,skipAfter:END-X"
SecRule ARGS "@rx a" \
    "id:2,\
    phase:2,\
    block"
SecMarker "END-X"
`
	if _, _, err := pruneParanoia(conf, 1); err == nil {
		t.Fatal("a phase 2 rule after a phase 1 guard only was pruned")
	}
	conf = strings.Replace(conf, "SecRule ARGS", `SecRule TX:DETECTION_PARANOIA_LEVEL "@lt 2" "id:3,phase:2,pass,nolog,skipAfter:END-X"`+"\nSecRule ARGS", 1)
	out, pruned, err := pruneParanoia(conf, 1)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "id:2") || !strings.Contains(out, "END-X") || len(pruned) != 3 {
		t.Fatalf("pruned %+v to %q", pruned, out)
	}
	if out, _, _ := pruneParanoia(conf, 2); !strings.Contains(out, "id:2") {
		t.Fatalf("paranoia level 2 pruned its own rule: %q", out)
	}
}

// TestParanoiaPruningSameVerdicts is the differential test: every CRS regression payload
// through the paranoia level 1 ruleset with and without pruning (detect mode, so every
// rule runs on every request) gives the same verdict, matched rules included.
func TestParanoiaPruningSameVerdicts(t *testing.T) {
	cases, _ := loadCRSCases(t)
	if raceEnabled {
		var sample []crsCase
		for i := 0; i < len(cases); i += 8 {
			sample = append(sample, cases[i])
		}
		cases = sample
	}
	cfg := ConfigFromSettings(&model.WAFSettings{Mode: model.WAFModeDetect})
	if cfg.prunableLevel() != 1 {
		t.Fatalf("prunable level %d", cfg.prunableLevel())
	}
	logger := slog.New(slog.DiscardHandler)
	pruned, err := Compile(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	full, err := compile(cfg, maxParanoiaLevel, logger)
	if err != nil {
		t.Fatal(err)
	}
	if pruned.RulesCount() >= full.RulesCount() {
		t.Fatalf("pruned ruleset has %d rules, full %d", pruned.RulesCount(), full.RulesCount())
	}
	var (
		mu       sync.Mutex
		diffs    []string
		detected int
	)
	parallelEach(len(cases), func(i int) {
		r, err := buildRaw(cases[i].input)
		if err != nil {
			return
		}
		id := fmt.Sprintf("pl-%d", i)
		a := pruned.Inspect(context.Background(), checkRequest(r, id))
		b := full.Inspect(context.Background(), checkRequest(r, id))
		a.Err, b.Err = nil, nil
		mu.Lock()
		defer mu.Unlock()
		if !reflect.DeepEqual(a, b) {
			diffs = append(diffs, fmt.Sprintf("%s: pruned %+v, full %+v", cases[i].name, a, b))
		}
		if a.Detected {
			detected++
		}
	})
	reportDiffs(t, diffs)
	t.Logf("%d payloads, %d detected at paranoia level 1, %d different verdicts; rules %d pruned vs %d full",
		len(cases), detected, len(diffs), pruned.RulesCount(), full.RulesCount())
	if detected < len(cases)/3 {
		t.Errorf("only %d of %d payloads detected: the comparison is too weak", detected, len(cases))
	}
}
