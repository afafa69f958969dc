package waf

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Paranoia pruning: every CRS rule file guards the rules of paranoia level N with
//
//	SecRule TX:DETECTION_PARANOIA_LEVEL "@lt N" "id:...,phase:1,...,skipAfter:END-<file>"
//	SecRule TX:DETECTION_PARANOIA_LEVEL "@lt N" "id:...,phase:2,...,skipAfter:END-<file>"
//	... rules of paranoia level >= N ...
//	SecMarker "END-<file>"
//
// When the detection paranoia level is below N, those guards skip every later rule of
// their phase up to the marker, so the rules are never evaluated — but Coraza still walks
// them, and evaluates the guards, on every request. pruneParanoia drops the guards and
// the rules they skip for a ruleset whose detection paranoia level is fixed at pl: the
// compiled ruleset evaluates exactly the rules the full one would.
//
// It is sound only when nothing can raise TX:DETECTION_PARANOIA_LEVEL above pl at run
// time (crs-setup's 900000 sets the blocking level, CRS 901 derives the detection level
// from it); prunableLevel decides that for a Config.

// maxParanoiaLevel is the highest CRS paranoia level: at it nothing is pruned.
const maxParanoiaLevel = 4

var (
	plGuardRx   = regexp.MustCompile(`^SecRule\s+TX:DETECTION_PARANOIA_LEVEL\s+"@lt\s+(\d+)"\s+"([^"]*)"$`)
	skipAfterRx = regexp.MustCompile(`(?:^|,)\s*skipAfter:'?([^,']+)'?`)
	phaseRx     = regexp.MustCompile(`(?:^|[",])\s*phase:'?(\w+)'?`)
	idRx        = regexp.MustCompile(`(?:^|[",])\s*id:'?(\d+)'?`)
	markerRx    = regexp.MustCompile(`^SecMarker\s+"?([^"\s]+)"?$`)
	// macroTxName is a setvar whose variable name is built by a macro (it could name
	// tx.detection_paranoia_level).
	macroTxName = regexp.MustCompile(`(?i)setvar:'?tx\.[^=,'"]*%\{`)
)

// prunableLevel is the paranoia level the CRS rules of c can be pruned to, or
// maxParanoiaLevel when they must be kept whole: the user's rules could raise the
// paranoia level at run time (setvar of tx.*paranoia_level, or of a tx variable whose
// name is a macro), or update rules by id or tag (SecRuleUpdate*), which fails to
// compile when the rule is not loaded.
func (c Config) prunableLevel() int {
	if c.ParanoiaLevel <= 0 || c.ParanoiaLevel >= maxParanoiaLevel {
		return maxParanoiaLevel
	}
	for _, s := range []string{c.CustomRules, c.CustomRulesAfter} {
		l := strings.ToLower(s)
		if strings.Contains(l, "paranoia") || strings.Contains(l, "secruleupdate") || macroTxName.MatchString(s) {
			return maxParanoiaLevel
		}
	}
	return c.ParanoiaLevel
}

// prunedRule is a rule left out by pruneParanoia.
type prunedRule struct {
	id    int  // 0 for a chained rule
	level int  // the guard's N: the rule runs at detection paranoia level >= N
	guard bool // a DETECTION_PARANOIA_LEVEL "@lt N" guard
}

// guardID is the id of a paranoia guard's actions (0 when it has none).
func guardID(actions string) int {
	if m := idRx.FindStringSubmatch(actions); m != nil {
		id, _ := strconv.Atoi(m[1])
		return id
	}
	return 0
}

// pruneParanoia returns the directives of one CRS rule file without the rules that a
// detection paranoia level of pl never evaluates, and the rules it left out. It fails
// when the file does not have the structure above (a guarded rule in a phase no guard
// skips, or a guard whose marker is missing), rather than guess.
func pruneParanoia(conf string, pl int) (string, []prunedRule, error) {
	if pl >= maxParanoiaLevel {
		return conf, nil, nil
	}
	var (
		out      strings.Builder
		pruned   []prunedRule
		marker   string              // set while dropping: the guards' SecMarker
		level    int                 // the first dropped guard's N
		skipped  = map[string]bool{} // phases whose rules the guards skip
		inChain  bool                // the previous dropped directive had the chain action
		lastLine int
	)
	for _, d := range splitDirectives(conf) {
		lastLine = d.line
		text := strings.ReplaceAll(d.text, "\\\n", "")
		if marker == "" {
			if m := plGuardRx.FindStringSubmatch(text); m != nil {
				n, _ := strconv.Atoi(m[1])
				if n > pl {
					sa := skipAfterRx.FindStringSubmatch(m[2])
					ph := phaseRx.FindStringSubmatch(m[2])
					if sa == nil || ph == nil {
						return "", nil, fmt.Errorf("line %d: paranoia guard without skipAfter or phase", d.line)
					}
					marker, level = sa[1], n
					skipped = map[string]bool{ph[1]: true}
					pruned = append(pruned, prunedRule{id: guardID(m[2]), level: n, guard: true})
					inChain = false
					continue
				}
			}
			out.WriteString(d.text)
			out.WriteByte('\n')
			continue
		}
		// Dropping the rules the guards skip, up to the marker.
		if m := markerRx.FindStringSubmatch(text); m != nil {
			if m[1] == marker {
				marker = ""
				out.WriteString(d.text)
				out.WriteByte('\n')
				continue
			}
			return "", nil, fmt.Errorf("line %d: marker %s inside a paranoia block ending at %s", d.line, m[1], marker)
		}
		if m := plGuardRx.FindStringSubmatch(text); m != nil {
			sa := skipAfterRx.FindStringSubmatch(m[2])
			ph := phaseRx.FindStringSubmatch(m[2])
			if sa == nil || ph == nil || sa[1] != marker {
				return "", nil, fmt.Errorf("line %d: paranoia guard that does not skip to %s", d.line, marker)
			}
			skipped[ph[1]] = true
			n, _ := strconv.Atoi(m[1])
			pruned = append(pruned, prunedRule{id: guardID(m[2]), level: n, guard: true})
			inChain = false
			continue
		}
		verb := strings.Fields(text)
		if len(verb) == 0 {
			continue
		}
		switch verb[0] {
		case "SecRule", "SecAction":
		default:
			return "", nil, fmt.Errorf("line %d: %s inside a paranoia block", d.line, verb[0])
		}
		actions := lastQuoted(text)
		if inChain {
			// A chained rule belongs to the dropped rule before it.
			pruned = append(pruned, prunedRule{level: level})
		} else {
			phase := "2" // Coraza's default phase
			if m := phaseRx.FindStringSubmatch(actions); m != nil {
				phase = m[1]
			}
			if !skipped[phase] {
				return "", nil, fmt.Errorf("line %d: rule in phase %s, which no paranoia guard skips", d.line, phase)
			}
			id := 0
			if m := idRx.FindStringSubmatch(actions); m != nil {
				id, _ = strconv.Atoi(m[1])
			}
			pruned = append(pruned, prunedRule{id: id, level: level})
		}
		inChain = hasAction(actions, "chain")
	}
	if marker != "" {
		return "", nil, fmt.Errorf("line %d: paranoia block without its marker %s", lastLine, marker)
	}
	return out.String(), pruned, nil
}

// lastQuoted is the last double-quoted argument of a directive (a rule's actions).
func lastQuoted(text string) string {
	end := strings.LastIndexByte(text, '"')
	if end <= 0 {
		return ""
	}
	start := strings.LastIndexByte(text[:end], '"')
	if start < 0 {
		return ""
	}
	return text[start+1 : end]
}

// hasAction reports whether the action list (comma separated, quoted values may contain
// commas) has the bare action name.
func hasAction(actions, name string) bool {
	inQuote := false
	start := 0
	for i := 0; i <= len(actions); i++ {
		if i < len(actions) {
			switch actions[i] {
			case '\'':
				inQuote = !inQuote
				continue
			case '\\':
				i++
				continue
			case ',':
				if inQuote {
					continue
				}
			default:
				continue
			}
		}
		if strings.TrimSpace(actions[start:i]) == name {
			return true
		}
		start = i + 1
	}
	return false
}

// dropUpdatesOfPruned removes the SecRuleUpdate*ById directives (CRS 999 updates the
// targets of rules of every paranoia level) that update only pruned rules: they change
// rules that are not loaded, and would not compile without them.
func dropUpdatesOfPruned(conf string, pruned []prunedRule) (string, error) {
	if len(pruned) == 0 {
		return conf, nil
	}
	ids := map[int]bool{}
	for _, p := range pruned {
		if p.id != 0 {
			ids[p.id] = true
		}
	}
	var out strings.Builder
	for _, d := range splitDirectives(conf) {
		f := strings.Fields(d.text)
		if len(f) < 3 || !strings.HasPrefix(strings.ToLower(f[0]), "secruleupdate") || !strings.HasSuffix(strings.ToLower(f[0]), "byid") {
			out.WriteString(d.text)
			out.WriteByte('\n')
			continue
		}
		gone, kept := 0, 0
		for _, ref := range f[1 : len(f)-1] {
			id, err := strconv.Atoi(ref)
			if err != nil {
				return "", fmt.Errorf("line %d: %s: rule id %q", d.line, f[0], ref)
			}
			if ids[id] {
				gone++
			} else {
				kept++
			}
		}
		switch {
		case gone == 0:
			out.WriteString(d.text)
			out.WriteByte('\n')
		case kept > 0:
			return "", fmt.Errorf("line %d: %s updates pruned and loaded rules", d.line, f[0])
		}
	}
	return out.String(), nil
}
