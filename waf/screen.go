package waf

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
	"github.com/corazawaf/coraza/v3/collection"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"
	"github.com/corazawaf/coraza/v3/types/variables"
)

// The request screen. Coraza evaluates every rule of a phase against every value of its
// targets: for each (rule, value) pair it looks the value up, runs the transformation
// chain through a per-transaction cache and calls the operator. For the CRS at paranoia
// level 1 that is ~130 pattern rules × every argument, name, cookie and header, and it is
// where nearly all of the time goes (a 1 KB JSON body: ~15 ms; the same request with the
// pattern rules removed: ~1 ms).
//
// Most of those pairs cannot match, and that can be proven far more cheaply than Coraza
// finds it out. At the start of each request phase, one rule of ours (screenRules) runs
// the screen: for every CRS rule of that phase whose operator has a literal necessary
// condition (@rx through rxfilter.go, @pm, @pmFromFile), it reads the values the rule
// would read from the transaction, applies the rule's transformation chain where it can
// do so exactly, and checks the condition (screen_index.go: one scan of each distinct
// transformed value finds every rule's literals at once; per-value results are cached
// across requests). A rule for which no value can satisfy it is removed from this
// transaction (Coraza's own per-transaction rule removal, the one ctl:ruleRemoveById
// uses); a rule that stays loses the target variables none of whose values can (the one
// ctl:ruleRemoveTargetById uses). Removing a rule or a variable that cannot match changes
// nothing: rule actions only run on a match.
//
// Soundness rests on these, each conservative where it is not exact:
//   - values: a rule's positive targets are read whole (key exclusions are ignored, so the
//     screen sees a superset); a rule with a count target (&ARGS), a collection outside
//     the request data (TX, MATCHED_VARS, ...), a negated operator, or targets changed by
//     SecRuleUpdate* directives is never removed;
//   - transformations: each step is either computed exactly (the same function Coraza
//     applies, see screenSteps) or known to leave values without its trigger bytes
//     unchanged (jsDecode leaves a value without '\' as it is); a value that has a trigger
//     byte for such a step keeps the rule; a chain with any other step keeps the rule;
//   - conditions: the same sound literal conditions the @rx prefilter uses, and the
//     phrase lists of @pm and @pmFromFile;
//   - Coraza's rule loop: skip:N counts the rules that are not removed, so the N rules after
//     a skip are never removed; a chain head keeps its variables (Coraza applies a head's
//     target exclusions to its chain); a variable with two or more exclusions is never
//     removed (Coraza appends a transaction's exclusions to a copy of the rule's slice,
//     which shares the rule's spare capacity from three elements on).
// TestScreenSameMatches replays every CRS test payload through the WAF with and without
// the screen and requires the same matched rules; TestScreenTransformations checks each
// step against Coraza's own transformation.

// skipRx finds a skip:N action.
var skipRx = regexp.MustCompile(`(?:^|,)\s*skip:\s*'?(\d+)`)

// screenOperatorName is the operator of the screen rules.
const screenOperatorName = "gwscreen"

// Rule ids of the screen rules (one per request phase).
const (
	screenRuleIDPhase1 = 8999901
	screenRuleIDPhase2 = 8999902
)

// screenRules are the directives that run the screen, loaded just before the CRS rules of
// paranoia level pl (maxParanoiaLevel: the whole CRS). REQUEST_METHOD always has exactly
// one value, so the operator runs exactly once per phase.
func screenRules(pl int) string {
	return fmt.Sprintf(`SecRule REQUEST_METHOD "@%[1]s %[2]d 1" "id:%[3]d,phase:1,pass,nolog,noauditlog,t:none"
SecRule REQUEST_METHOD "@%[1]s %[2]d 2" "id:%[4]d,phase:2,pass,nolog,noauditlog,t:none"
`, screenOperatorName, pl, screenRuleIDPhase1, screenRuleIDPhase2)
}

// screenOp is the operator of a screen rule.
type screenOp struct {
	pl    int
	phase int
}

func newScreenOp(opts plugintypes.OperatorOptions) (plugintypes.Operator, error) {
	var op screenOp
	if _, err := fmt.Sscanf(opts.Arguments, "%d %d", &op.pl, &op.phase); err != nil ||
		op.pl < 1 || op.pl > maxParanoiaLevel || op.phase < 1 || op.phase > 2 {
		return nil, fmt.Errorf("@%s: want \"<paranoia level> <phase>\", got %q", screenOperatorName, opts.Arguments)
	}
	return op, nil
}

// ruleRemover is Coraza's transaction: RemoveRuleByID and RemoveRuleTargetByID (what
// ctl:ruleRemoveById and ctl:ruleRemoveTargetById call) are not in the public interface.
type ruleRemover interface {
	RemoveRuleByID(id int)
	RemoveRuleTargetByID(id int, v variables.RuleVariable, key string, keyRx *regexp.Regexp)
}

// Evaluate screens the rules of its phase and never matches.
func (o screenOp) Evaluate(tx plugintypes.TransactionState, _ string) bool {
	if stopIfExpired(tx) {
		// The request's deadline passed (deadline.go): every rule is gone already.
		return false
	}
	rm, ok := tx.(ruleRemover)
	if !ok {
		return false
	}
	plan := screenPlanFor(o.pl)
	if plan == nil {
		return false
	}
	plan.phases[o.phase].run(tx, rm)
	return false
}

// screenPlan is the screenable rules of one CRS rule text, by phase.
type screenPlan struct {
	phases [3]phasePlan
	// skipped counts head rules that cannot be screened, by reason (for tests and docs).
	skipped map[string]int
}

var screenPlans [maxParanoiaLevel + 1]struct {
	once sync.Once
	plan *screenPlan
}

// screenPlanFor returns the plan for the CRS rules of paranoia level pl, built on first
// use: after the WAF that runs it has compiled, so the @rx filters are in rxCache.
func screenPlanFor(pl int) *screenPlan {
	s := &screenPlans[pl]
	s.once.Do(func() {
		text, err := crsRequestRules(pl)
		if err == nil {
			s.plan = buildScreenPlan(text)
		}
	})
	return s.plan
}

// screenedRule is one CRS rule the screen can remove.
type screenedRule struct {
	id       int
	targets  []screenTarget
	steps    []screenStep
	chainKey string // the transformation names, for grouping rules by chain
	multi    bool   // multiMatch: the operator also sees every intermediate value
	chained  bool   // the head of a chain (its target exclusions would apply to the chain)
	rc       ruleCond
	vars     []variables.RuleVariable // distinct variables of the targets
	varBit   []uint16                 // by target: its variable's bit in vars
	// negations counts the exclusions (!VAR:key) of each variable of vars. A variable
	// with two or more is never removed from the rule: Coraza adds a transaction's target
	// exclusions by appending to a copy of the rule's exclusion slice, which, from three
	// elements on, may share spare capacity with the rule's own slice (concurrent
	// transactions would write the same element).
	negations map[variables.RuleVariable]int

	idx int    // index in its phase plan
	h   *hnode // rc.cond over the phase's literal index (not for multi rules)
}

type screenTarget struct {
	v   variables.RuleVariable
	key string // a plain key ("" = the whole collection)
}

// screenable are the collections the screen reads: request data that no rule changes.
var screenable = map[variables.RuleVariable]bool{
	variables.Args: true, variables.ArgsGet: true, variables.ArgsPost: true,
	variables.ArgsNames: true, variables.ArgsGetNames: true, variables.ArgsPostNames: true,
	variables.RequestCookies: true, variables.RequestCookiesNames: true,
	variables.RequestHeaders: true, variables.RequestHeadersNames: true,
	variables.RequestFilename: true, variables.RequestBasename: true,
	variables.RequestURI: true, variables.RequestURIRaw: true, variables.RequestLine: true,
	variables.QueryString: true, variables.RequestBody: true, variables.RequestMethod: true,
	variables.RequestProtocol: true, variables.Files: true, variables.FilesNames: true,
	variables.XML: true, variables.MultipartPartHeaders: true,
}

// buildScreenPlan reads the CRS rule text and keeps the rules the screen can decide.
func buildScreenPlan(text string) *screenPlan {
	p := &screenPlan{skipped: map[string]int{}}
	updated := map[int]bool{}                           // rules whose targets or actions a directive changes
	negated := map[int]map[variables.RuleVariable]int{} // exclusions added by directives
	var heads []*screenedRule
	var phases []int
	inChain := false
	skipping := map[string]int{} // by phase: rules left to a skip:N
	for _, d := range splitDirectives(text) {
		line := strings.ReplaceAll(d.text, "\\\n", "")
		verb, rest, _ := strings.Cut(line, " ")
		switch verb {
		case "SecRuleUpdateTargetById":
			idStr, targets, _ := strings.Cut(strings.TrimSpace(rest), " ")
			id, _ := strconv.Atoi(idStr)
			for _, t := range splitTargets(strings.Trim(strings.TrimSpace(targets), `"`)) {
				if !t.negated {
					updated[id] = true // a target added: the rule reads more than it says
					continue
				}
				if v, err := variables.Parse(t.name); err == nil {
					if negated[id] == nil {
						negated[id] = map[variables.RuleVariable]int{}
					}
					negated[id][v]++
				}
			}
			continue
		case "SecRuleUpdateActionById", "SecRuleUpdateTargetByTag", "SecRuleUpdateTargetByMsg":
			// Not used by the CRS; a rule we cannot tie down is simply not screened.
			return &screenPlan{skipped: map[string]int{"update directive " + verb: 1}}
		case "SecRule":
		default:
			continue
		}
		vars, op, actions, ok := splitSecRule(rest)
		child := inChain
		inChain = ok && hasAction(actions, "chain")
		if !ok || child {
			continue
		}
		// skip:N skips the next N rules of the phase that are not removed: a removed rule
		// would pass the skip on to a rule it was not meant for, so those N are kept.
		ph := "2"
		if m := phaseRx.FindStringSubmatch(actions); m != nil {
			ph = m[1]
			switch ph { // Coraza's phase names
			case "request":
				ph = "2"
			case "response":
				ph = "4"
			case "logging":
				ph = "5"
			}
		}
		if skipping[ph] > 0 {
			skipping[ph]--
			p.skipped["within a skip:N"]++
			continue
		}
		if m := skipRx.FindStringSubmatch(actions); m != nil {
			skipping[ph], _ = strconv.Atoi(m[1])
		}
		r, phase, reason := parseScreenedRule(vars, op, actions)
		if reason != "" {
			p.skipped[reason]++
			continue
		}
		heads = append(heads, r)
		phases = append(phases, phase)
	}
	for i, r := range heads {
		if updated[r.id] {
			p.skipped["targets updated"]++
			continue
		}
		for v, n := range negated[r.id] {
			r.negations[v] += n
		}
		p.phases[phases[i]].rules = append(p.phases[phases[i]].rules, r)
	}
	for i := range p.phases {
		p.phases[i].index()
	}
	return p
}

// splitSecRule splits the text after SecRule into variables, operator and actions the
// way Coraza's parser does (quoted operator with \" unescaped, quoted actions).
func splitSecRule(s string) (vars, op, actions string, ok bool) {
	s = strings.TrimSpace(s)
	vars, rest, found := strings.Cut(s, " ")
	if !found {
		return "", "", "", false
	}
	rest = strings.TrimLeft(rest, " ")
	if len(rest) < 2 || rest[0] != '"' {
		return "", "", "", false
	}
	end := -1
	for i := 1; i < len(rest); i++ {
		if rest[i] == '\\' {
			i++
			continue
		}
		if rest[i] == '"' {
			end = i
			break
		}
	}
	if end < 0 {
		return "", "", "", false
	}
	op = strings.ReplaceAll(rest[1:end], `\"`, `"`)
	rest = strings.TrimSpace(rest[end+1:])
	if len(rest) >= 2 && rest[0] == '"' && rest[len(rest)-1] == '"' {
		actions = rest[1 : len(rest)-1]
	}
	return vars, op, actions, true
}

// parseScreenedRule builds the screen of one head rule, or says why it has none.
func parseScreenedRule(vars, op, actions string) (*screenedRule, int, string) {
	m := idRx.FindStringSubmatch(actions)
	if m == nil {
		return nil, 0, "no id"
	}
	id, _ := strconv.Atoi(m[1])
	phase := 2
	if pm := phaseRx.FindStringSubmatch(actions); pm != nil {
		switch pm[1] {
		case "1":
			phase = 1
		case "2", "request":
			phase = 2
		default:
			return nil, 0, "not a request phase"
		}
	}
	r := &screenedRule{id: id, multi: hasAction(actions, "multiMatch"), chained: hasAction(actions, "chain")}

	// Transformations, in order; t:none clears the ones before it.
	for _, a := range splitActions(actions) {
		name, ok := strings.CutPrefix(a, "t:")
		if !ok {
			continue
		}
		name = strings.TrimSpace(name)
		if strings.EqualFold(name, "none") {
			r.steps, r.chainKey = r.steps[:0], ""
			continue
		}
		r.chainKey += strings.ToLower(name) + ","

		st, known := screenSteps[strings.ToLower(name)]
		if !known {
			return nil, 0, "transformation " + name
		}
		r.steps = append(r.steps, st)
	}

	// Operator.
	op = strings.TrimSpace(op)
	if op == "" || op[0] != '@' {
		return nil, 0, "negated or implicit operator"
	}
	opName, opArgs, _ := strings.Cut(op, " ")
	opArgs = strings.TrimSpace(opArgs)
	switch opName {
	case "@" + rxOperatorName:
		c, ok := rxCache.Load("(?sm)" + opArgs)
		if !ok {
			return nil, 0, "@rx not compiled by the gateway operator"
		}
		f := c.(*compiledRx).filter
		if f == nil {
			return nil, 0, "@rx without a literal condition"
		}
		r.rc = ruleCond{cond: f.cond, fold: f.fold}
		if f.fold {
			r.rc.bail = bailFoldRunes
			if f.nonASCII {
				r.rc.bail = bailNonASCII
			}
		}
	case "@pm":
		cond := phraseCond(strings.Split(strings.ToLower(opArgs), " "))
		if cond == nil {
			return nil, 0, "@pm with an empty phrase"
		}
		r.rc = ruleCond{cond: cond, fold: true}
	case "@pmFromFile":
		data, err := fs.ReadFile(coreruleset.FS, path.Join(crsDir, opArgs))
		if err != nil {
			return nil, 0, "@pmFromFile " + opArgs + " not found"
		}
		var lines []string
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l == "" || l[0] == '#' {
				continue
			}
			lines = append(lines, strings.ToLower(l))
		}
		cond := phraseCond(lines)
		if cond == nil {
			return nil, 0, "@pmFromFile without phrases"
		}
		r.rc = ruleCond{cond: cond, fold: true}
	default:
		return nil, 0, "operator " + opName
	}

	// Targets.
	r.negations = map[variables.RuleVariable]int{}
	for _, t := range splitTargets(vars) {
		if t.negated {
			// An exclusion only narrows what the rule reads.
			if v, err := variables.Parse(t.name); err == nil {
				r.negations[v]++
			}
			continue
		}
		if t.count {
			return nil, 0, "count target"
		}
		v, err := variables.Parse(t.name)
		if err != nil || !screenable[v] {
			return nil, 0, "target " + t.name
		}
		key := t.key
		if v == variables.XML || strings.HasPrefix(key, "/") || strings.HasPrefix(key, "'") {
			key = "" // XPath, regex or quoted key: read the whole collection
		}
		r.targets = append(r.targets, screenTarget{v: v, key: key})
		bit := slices.Index(r.vars, v)
		if bit < 0 {
			bit = len(r.vars)
			r.vars = append(r.vars, v)
		}
		r.varBit = append(r.varBit, 1<<bit)
	}
	if len(r.vars) > 16 {
		return nil, 0, "more than 16 target variables"
	}
	if len(r.targets) == 0 {
		return nil, 0, "no positive target"
	}
	return r, phase, ""
}

// phraseCond is @pm's match (ASCII case-insensitive substring of any phrase; the phrases
// are lowercase) as a sound condition, or nil when a phrase is empty (matches anything).
func phraseCond(phrases []string) *litCond {
	var conds []*litCond
	for _, ph := range phrases {
		c := litOf(lowerASCII(ph))
		if c == nil {
			return nil
		}
		conds = append(conds, c)
	}
	cond := orOf(conds)
	if cond == nil {
		return nil
	}
	finalize(cond)
	return cond
}

type targetSpec struct {
	name, key      string
	negated, count bool
}

// splitTargets splits a rule's variable list (A|!B:key|&C|D:/re|gex/) into targets.
func splitTargets(vars string) []targetSpec {
	var out []targetSpec
	for i := 0; i < len(vars); {
		var t targetSpec
		for i < len(vars) && (vars[i] == '!' || vars[i] == '&') {
			if vars[i] == '!' {
				t.negated = true
			} else {
				t.count = true
			}
			i++
		}
		start := i
		for i < len(vars) && vars[i] != ':' && vars[i] != '|' {
			i++
		}
		t.name = vars[start:i]
		if i < len(vars) && vars[i] == ':' {
			i++
			start = i
			switch {
			case i < len(vars) && vars[i] == '/' && !strings.HasPrefix(t.name, "XML"):
				// Regex key: up to the closing unescaped slash.
				i++
				for i < len(vars) && vars[i] != '/' {
					if vars[i] == '\\' {
						i++
					}
					i++
				}
				i++
			case i < len(vars) && vars[i] == '\'':
				i++
				for i < len(vars) && vars[i] != '\'' {
					i++
				}
				i++
			}
			for i < len(vars) && vars[i] != '|' {
				i++
			}
			t.key = vars[start:min(i, len(vars))]
		}
		out = append(out, t)
		i++ // the '|'
	}
	return out
}

// splitActions splits an action list on commas outside single quotes.
func splitActions(actions string) []string {
	var out []string
	inQuote := false
	start := 0
	for i := 0; i < len(actions); i++ {
		switch actions[i] {
		case '\\':
			i++
		case '\'':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, strings.TrimSpace(actions[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(actions[start:]))
}

// screenValues caches the values of each target read during one screen.
type screenValues struct {
	m map[screenTarget][]types.MatchData
}

func (sv *screenValues) get(tx plugintypes.TransactionState, t screenTarget) []types.MatchData {
	if md, ok := sv.m[t]; ok {
		return md
	}
	var md []types.MatchData
	if col := tx.Collection(t.v); col != nil {
		if k, ok := col.(collection.Keyed); ok && t.key != "" {
			md = k.FindString(t.key)
		} else {
			md = col.FindAll()
		}
	}
	if sv.m == nil {
		sv.m = make(map[screenTarget][]types.MatchData, 8)
	}
	sv.m[t] = md
	return md
}

// mayMatchVars returns the bits (see varBit) of the variables with a value that may
// satisfy the rule's operator.
func (r *screenedRule) mayMatchVars(tx plugintypes.TransactionState, vals *screenValues) uint16 {
	var bits uint16
	for i, t := range r.targets {
		if bits&r.varBit[i] != 0 {
			continue
		}
		for _, md := range vals.get(tx, t) {
			if r.valueMayMatch(md.Value()) {
				bits |= r.varBit[i]
				break
			}
		}
	}
	return bits
}

// valueMayMatch applies the chain to v and checks the condition on the result (and, with
// multiMatch, on every intermediate value).
func (r *screenedRule) valueMayMatch(v string) bool {
	if r.multi && r.rc.eval(v) {
		return true
	}
	for _, st := range r.steps {
		var ok bool
		if v, ok = st(v); !ok {
			return true // a step we do not compute could change v
		}
		if r.multi && r.rc.eval(v) {
			return true
		}
	}
	return r.rc.eval(v)
}
