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

var (
	crsOnce  sync.Once
	crsText  string
	crsFiles []string
	crsErr   error
)

// crsRequestRules returns the CRS request rule files (REQUEST-*.conf, in load order) as
// one block of directives, with @rx rewritten to the gateway's prefiltered @rx.
func crsRequestRules() (string, error) {
	crsOnce.Do(func() {
		entries, err := fs.ReadDir(coreruleset.FS, crsDir)
		if err != nil {
			crsErr = fmt.Errorf("waf: reading embedded CRS: %w", err)
			return
		}
		var b strings.Builder
		for _, e := range entries {
			name := e.Name()
			if !strings.HasPrefix(name, "REQUEST-") || !strings.HasSuffix(name, ".conf") {
				continue
			}
			crsFiles = append(crsFiles, name)
		}
		sort.Strings(crsFiles)
		for _, name := range crsFiles {
			data, err := fs.ReadFile(coreruleset.FS, path.Join(crsDir, name))
			if err != nil {
				crsErr = fmt.Errorf("waf: reading %s: %w", name, err)
				return
			}
			fmt.Fprintf(&b, "# --- %s\n", name)
			b.WriteString(rewriteRx(string(data)))
			b.WriteString("\n")
		}
		if len(crsFiles) == 0 {
			crsErr = errors.New("waf: no CRS request rules in the embedded coreruleset")
			return
		}
		crsText = b.String()
	})
	return crsText, crsErr
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
