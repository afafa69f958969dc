package waf

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"

	coreruleset "github.com/corazawaf/coraza-coreruleset/v4"
)

// crsDir is the CRS rules folder of the embedded coreruleset FS.
const crsDir = "@owasp_crs"

// crsRuleSet is the CRS request rules pruned to one paranoia level.
type crsRuleSet struct {
	once   sync.Once
	text   string
	pruned []prunedRule
	err    error
}

// crsByLevel holds the rule sets by paranoia level (index 1..maxParanoiaLevel; level 4
// is the whole CRS).
var crsByLevel [maxParanoiaLevel + 1]crsRuleSet

// crsRequestRules returns the CRS request rule files (REQUEST-*.conf, in load order) as
// one block of directives, with @rx rewritten to the gateway's prefiltered @rx, and
// without the rules a detection paranoia level of pl never evaluates (paranoia.go).
func crsRequestRules(pl int) (string, error) {
	rs := crsRules(pl)
	return rs.text, rs.err
}

func crsRules(pl int) *crsRuleSet {
	pl = min(max(pl, 1), maxParanoiaLevel)
	rs := &crsByLevel[pl]
	rs.once.Do(func() { rs.text, rs.pruned, rs.err = loadCRS(pl) })
	return rs
}

func loadCRS(pl int) (string, []prunedRule, error) {
	entries, err := fs.ReadDir(coreruleset.FS, crsDir)
	if err != nil {
		return "", nil, fmt.Errorf("waf: reading embedded CRS: %w", err)
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "REQUEST-") && strings.HasSuffix(name, ".conf") {
			files = append(files, name)
		}
	}
	if len(files) == 0 {
		return "", nil, errors.New("waf: no CRS request rules in the embedded coreruleset")
	}
	sort.Strings(files)
	texts := make([]string, len(files))
	var pruned []prunedRule
	for i, name := range files {
		data, err := fs.ReadFile(coreruleset.FS, path.Join(crsDir, name))
		if err != nil {
			return "", nil, fmt.Errorf("waf: reading %s: %w", name, err)
		}
		text, p, err := pruneParanoia(string(data), pl)
		if err != nil {
			return "", nil, fmt.Errorf("waf: pruning %s to paranoia level %d: %w", name, pl, err)
		}
		texts[i] = text
		pruned = append(pruned, p...)
	}
	var b strings.Builder
	for i, name := range files {
		text, err := dropUpdatesOfPruned(texts[i], pruned)
		if err != nil {
			return "", nil, fmt.Errorf("waf: pruning %s to paranoia level %d: %w", name, pl, err)
		}
		fmt.Fprintf(&b, "# --- %s\n", name)
		b.WriteString(rewriteRx(text))
		b.WriteString("\n")
	}
	return b.String(), pruned, nil
}

// rewriteRx replaces the @rx operator of every rule by the gateway's @rx, except for
// patterns Coraza matches as arbitrary bytes.
func rewriteRx(conf string) string {
	const op = `"@rx `
	var b strings.Builder
	for {
		i := strings.Index(conf, op)
		if i < 0 {
			b.WriteString(conf)
			return b.String()
		}
		start := i + len(op)
		end := start
		for end < len(conf) && conf[end] != '"' {
			if conf[end] == '\\' {
				end++
			}
			end++
		}
		end = min(end, len(conf))
		b.WriteString(conf[:i])
		if usesArbitraryBytes(conf[start:end]) {
			b.WriteString(op)
		} else {
			b.WriteString(`"@` + rxOperatorName + " ")
		}
		b.WriteString(conf[start:end])
		conf = conf[end:]
	}
}

// rootFS serves the embedded coreruleset to Coraza; data files (@pmFromFile and the
// like) named relative to the rules folder resolve inside it.
type rootFS struct{}

func (rootFS) Open(name string) (fs.File, error) {
	f, err := coreruleset.FS.Open(name)
	if err != nil && !strings.HasPrefix(name, "@") {
		if f2, err2 := coreruleset.FS.Open(path.Join(crsDir, name)); err2 == nil {
			return f2, nil
		}
	}
	return f, err
}

func (rootFS) ReadFile(name string) ([]byte, error) {
	b, err := fs.ReadFile(coreruleset.FS, name)
	if err != nil && !strings.Contains(name, "@") {
		if b2, err2 := fs.ReadFile(coreruleset.FS, path.Join(crsDir, path.Base(name))); err2 == nil {
			return b2, nil
		}
	}
	return b, err
}

func (r rootFS) Glob(pattern string) ([]string, error) { return fs.Glob(coreruleset.FS, pattern) }
