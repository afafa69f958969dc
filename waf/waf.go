// Package waf is the gateway's web application firewall: Coraza with the OWASP Core Rule
// Set v4 (request rules, embedded), plus user SecLang rules and exclusions, used by the
// ext_authz Check path.
//
// One compiled WAF exists per distinct ruleset (its key is a hash of the final directives)
// and is shared by every route with the same settings (Registry). Inspect feeds an Envoy
// CheckRequest to a Coraza transaction in Coraza's own order and returns a Verdict.
package waf

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/api-gateway/api-gateway/model"
)

// WAF is one compiled ruleset. It is immutable and safe for concurrent use.
type WAF struct {
	key    string
	cfg    Config
	engine coraza.WAF
	rules  int
	logger *slog.Logger
	// categories maps rule ids to attack categories (from CRS tags, else id ranges).
	categories map[int]string
}

// newTx starts a transaction with Envoy's request id and the request's context.
func (w *WAF) newTx(o experimental.Options) types.Transaction {
	if wo, ok := w.engine.(experimental.WAFWithOptions); ok {
		return wo.NewTransactionWithOptions(o)
	}
	return w.engine.NewTransactionWithID(o.ID)
}

// Key is the hash of the ruleset's final directives.
func (w *WAF) Key() string { return w.key }

// Config returns the settings the ruleset was built from.
func (w *WAF) Config() Config { return w.cfg }

// Mode returns the WAF's mode.
func (w *WAF) Mode() Mode { return w.cfg.Mode }

// RulesCount is the number of compiled rules.
func (w *WAF) RulesCount() int { return w.rules }

// Close releases the WAF's share of Coraza's process-wide regex cache. Transactions that
// are still running keep working (their rules hold the compiled expressions).
func (w *WAF) Close() error {
	if c, ok := w.engine.(experimental.WAFCloser); ok {
		return c.Close()
	}
	return nil
}

// Compile builds the WAF for cfg. A directive that does not compile is reported with its
// section and line (see DirectiveError).
func Compile(cfg Config, logger *slog.Logger) (*WAF, error) {
	return compile(cfg, cfg.prunableLevel(), logger)
}

// compile is Compile with the CRS rules pruned to paranoia level pl (maxParanoiaLevel:
// not pruned).
func compile(cfg Config, pl int, logger *slog.Logger) (*WAF, error) {
	return compileSecs(cfg, cfg.sections(), pl, logger)
}

// compileSecs is compile with the sections given (tests turn the screen off in them).
func compileSecs(cfg Config, secs []section, pl int, logger *slog.Logger) (*WAF, error) {
	if logger == nil {
		logger = slog.Default()
	}
	categories := map[int]string{}
	engine, err := compileSections(secs, pl, func(r types.RuleMetadata) {
		if c := RuleCategory(r); c != "" {
			categories[r.ID()] = c
		}
	})
	if err != nil {
		return nil, locateError(secs, pl, err)
	}
	w := &WAF{key: cfg.Key(), cfg: cfg, engine: engine, logger: logger, categories: categories}
	if rc, ok := engine.(experimental.WAFWithRules); ok {
		w.rules = rc.RulesCount()
	}
	return w, nil
}

func compileSections(secs []section, pl int, observer func(types.RuleMetadata)) (coraza.WAF, error) {
	registerOperators()
	conf := coraza.NewWAFConfig().WithRootFS(rootFS{})
	for _, s := range secs {
		if s.crs {
			rules, err := crsRequestRules(pl)
			if err != nil {
				return nil, err
			}
			if s.screen {
				conf = conf.WithDirectives(screenRules(min(max(pl, 1), maxParanoiaLevel)))
			}
			if s.checkpoints {
				rules = withCheckpoints(rules)
			}
			conf = conf.WithDirectives(rules)
			continue
		}
		conf = conf.WithDirectives(s.directives)
	}
	if observer != nil {
		conf = experimental.WAFConfigWithRuleObserver(conf, observer)
	}
	return coraza.NewWAF(conf)
}

// ruleCategory is the category of a compiled rule ("" for CRS bookkeeping rules).
func (w *WAF) ruleCategory(id int) string {
	if c, ok := w.categories[id]; ok {
		return c
	}
	return categoryByID(id)
}

// DirectiveError is a ruleset that does not compile: Section is custom_rules,
// custom_rules_after_crs (or an internal section), Line the 1-based line in that section
// where the failing directive starts.
type DirectiveError struct {
	Section string
	Line    int
	Err     error
}

func (e *DirectiveError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s line %d: %v", e.Section, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Section, e.Err)
}

func (e *DirectiveError) Unwrap() error { return e.Err }

// locateError finds the first directive whose addition makes the ruleset fail to compile,
// by bisecting over the directives in load order (each probe is a compile of a prefix).
func locateError(secs []section, pl int, cause error) error {
	type dir struct {
		sec  int
		line int
		text string
	}
	var all []dir
	for i, s := range secs {
		if s.crs {
			all = append(all, dir{i, 0, s.directives})
			continue
		}
		for _, d := range splitDirectives(s.directives) {
			all = append(all, dir{i, d.line, d.text})
		}
	}
	build := func(n int) []section {
		out := make([]section, 0, len(secs))
		var b strings.Builder
		cur := -1
		for _, d := range all[:n] {
			if d.sec != cur && cur >= 0 {
				out = append(out, section{name: secs[cur].name, directives: b.String(), crs: secs[cur].crs, checkpoints: secs[cur].checkpoints})
				b.Reset()
			}
			cur = d.sec
			b.WriteString(d.text)
			b.WriteByte('\n')
		}
		if cur >= 0 {
			out = append(out, section{name: secs[cur].name, directives: b.String(), crs: secs[cur].crs, checkpoints: secs[cur].checkpoints})
		}
		return out
	}
	// Invariant: prefix lo compiles, prefix hi fails.
	lo, hi := 0, len(all)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if e, err := compileSections(build(mid), pl, nil); err != nil {
			hi = mid
			cause = err
		} else {
			closeEngine(e)
			lo = mid
		}
	}
	if hi == 0 || hi > len(all) {
		return &DirectiveError{Section: "ruleset", Err: cause}
	}
	d := all[hi-1]
	if e, err := compileSections(build(hi), pl, nil); err != nil {
		cause = err
	} else {
		closeEngine(e)
	}
	return &DirectiveError{Section: secs[d.sec].name, Line: d.line, Err: cause}
}

func closeEngine(e coraza.WAF) {
	if c, ok := e.(experimental.WAFCloser); ok {
		_ = c.Close()
	}
}

type directive struct {
	line int
	text string
}

// splitDirectives splits SecLang text into logical directives the way Coraza's parser
// reads it: comments and blank lines skipped, trailing backslashes continue a line,
// backtick blocks kept whole.
func splitDirectives(text string) []directive {
	var out []directive
	var buf strings.Builder
	start := 0
	inBackticks := false
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || line[0] == '#' {
			continue
		}
		if buf.Len() == 0 {
			start = i + 1
		}
		switch {
		case !inBackticks && line[len(line)-1] == '`':
			inBackticks = true
		case inBackticks && line[0] == '`':
			inBackticks = false
		}
		if inBackticks {
			buf.WriteString(line)
			buf.WriteByte('\n')
			continue
		}
		if strings.HasSuffix(line, "\\") {
			buf.WriteString(line)
			buf.WriteByte('\n')
			continue
		}
		buf.WriteString(line)
		out = append(out, directive{start, buf.String()})
		buf.Reset()
	}
	if buf.Len() > 0 {
		out = append(out, directive{start, buf.String()})
	}
	return out
}

// ValidateSettings checks s like model.WAFSettings.Validate and also compiles the ruleset,
// so a bad custom rule is reported on its field with its line. It returns nil when s is nil
// or disabled and valid.
func ValidateSettings(s *model.WAFSettings) model.FieldErrors {
	if s == nil {
		return nil
	}
	errs := s.Validate()
	if len(errs) > 0 || !s.IsEnabled() {
		return errs
	}
	w, err := Compile(ConfigFromSettings(s), slog.New(slog.DiscardHandler))
	if err != nil {
		var de *DirectiveError
		field := "custom_rules"
		msg := err.Error()
		if errors.As(err, &de) {
			switch de.Section {
			case sectionCustom, sectionCustomAfter, sectionExclusions:
				field = de.Section
			}
			msg = de.Err.Error()
			if de.Line > 0 {
				msg = fmt.Sprintf("line %d: %s", de.Line, msg)
			}
		}
		errs.Add(field, "%s", msg)
		return errs
	}
	_ = w.Close()
	return nil
}
