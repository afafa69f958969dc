package waf

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/corazawaf/coraza/v3"
	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"golang.org/x/net/html"
)

// screenStep is one transformation as the screen knows it: it returns exactly what
// Coraza's transformation of that name returns, or false when it cannot tell (the value
// has a byte that step would act on and the screen does not compute it).
type screenStep func(string) (string, bool)

// exact is a step computed in full.
func exact(f func(string) string) screenStep {
	return func(s string) (string, bool) { return f(s), true }
}

// identityUnless is a step known only on values without its trigger bytes, which it
// returns unchanged (Coraza's implementations start by scanning for those bytes and return
// the input when there is none).
func identityUnless(trigger func(string) bool) screenStep {
	return func(s string) (string, bool) { return s, !trigger(s) }
}

// screenSteps are the transformations the screen handles, by lowercase name. Every one is
// checked against Coraza's own on the CRS payloads (TestScreenTransformations).
var screenSteps = map[string]screenStep{
	"lowercase":          exact(strings.ToLower),
	"removenulls":        exact(func(s string) string { return strings.ReplaceAll(s, "\x00", "") }),
	"htmlentitydecode":   exact(html.UnescapeString),
	"compresswhitespace": exact(compressWhitespace),
	"removewhitespace":   exact(removeWhitespace),
	"cmdline":            exact(cmdLine),
	"replacecomments":    exact(replaceComments),
	"removecommentschar": exact(removeCommentsChar),
	"normalizepath":      exact(normalizePath),
	"normalisepath":      exact(normalizePath),
	"utf8tounicode":      exact(utf8ToUnicode),
	"urldecodeuni":       urlDecodeUniStep,

	"urldecode":       identityUnless(hasAnyByte("%+")),
	"jsdecode":        identityUnless(hasAnyByte(`\`)),
	"cssdecode":       identityUnless(hasAnyByte(`\`)),
	"escapeseqdecode": identityUnless(hasAnyByte(`\`)),
	// normalizePathWin turns '\' into '/', cleans the path, strips alternate data streams
	// (':') and trailing dots and spaces: a value with none of those bytes is unchanged.
	"normalizepathwin": identityUnless(hasAnyByte(`/\:. `)),
	"normalisepathwin": identityUnless(hasAnyByte(`/\:. `)),
}

func hasAnyByte(set string) func(string) bool {
	return func(s string) bool { return strings.ContainsAny(s, set) }
}

func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// compressWhitespace replaces each run of whitespace (Latin-1 spaces, decoded as runes,
// and the raw byte 0xA0) with one space.
func compressWhitespace(s string) string {
	var b strings.Builder
	inSpace := false
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '\t', '\n', '\v', '\f', '\r', ' ', 0x85, 0xA0:
			size = max(size, 1)
			if !inSpace {
				b.WriteByte(' ')
			}
			inSpace = true
		default:
			if s[i] == 0xA0 {
				if !inSpace {
					b.WriteByte(' ')
				}
				inSpace = true
			} else {
				b.WriteString(s[i : i+size])
				inSpace = false
			}
		}
		i += size
	}
	return b.String()
}

// removeWhitespace drops Unicode spaces (strings.Map also turns invalid UTF-8 into U+FFFD).
func removeWhitespace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// cmdLine is ModSecurity's cmdLine: delete \ " ' ^, turn , ; and whitespace runs into one
// space, drop a space before / or (, lowercase ASCII.
func cmdLine(s string) string {
	out := make([]byte, 0, len(s))
	space := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"', '\'', '\\', '^':
		case ' ', ',', ';', '\t', '\r', '\n':
			if !space {
				out = append(out, ' ')
				space = true
			}
		case '/', '(':
			if space {
				out = out[:len(out)-1]
			}
			space = false
			out = append(out, c)
		default:
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			out = append(out, c)
			space = false
		}
	}
	return string(out)
}

// replaceComments replaces each /* ... */ comment (an unterminated one runs to the end)
// with one space.
func replaceComments(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "/*")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		b.WriteByte(' ')
		j := strings.Index(s[i+2:], "*/")
		if j < 0 {
			return b.String()
		}
		s = s[i+2+j+2:]
	}
}

// removeCommentsChar deletes the comment markers /* */ <!-- --> -- and #.
func removeCommentsChar(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		rest := s[i:]
		switch {
		case strings.HasPrefix(rest, "/*"), strings.HasPrefix(rest, "*/"):
			i += 2
		case strings.HasPrefix(rest, "<!--"):
			i += 4
		case strings.HasPrefix(rest, "-->"):
			i += 3
		case strings.HasPrefix(rest, "--"):
			i += 2
		case rest[0] == '#':
			i++
		default:
			out = append(out, rest[0])
			i++
		}
	}
	return string(out)
}

// normalizePath cleans a path lexically (filepath.Clean), keeping a trailing slash; a path
// that cleans to "." becomes empty.
func normalizePath(s string) string {
	if s == "" {
		return s
	}
	c := filepath.Clean(s)
	switch {
	case c == ".":
		return ""
	case s[len(s)-1] == '/':
		return c + "/"
	}
	return c
}

// utf8ToUnicode writes every non-ASCII character (an invalid byte counts as U+FFFD) as
// %u and its code point in lowercase hex, at least four digits.
func utf8ToUnicode(s string) string {
	if !hasNonASCII(s) {
		return s
	}
	out := make([]byte, 0, len(s)+8)
	for _, r := range s {
		if r < utf8.RuneSelf {
			out = append(out, byte(r))
			continue
		}
		out = append(out, '%', 'u')
		for n := r; n < 0x1000; n <<= 4 {
			out = append(out, '0')
		}
		out = strconv.AppendUint(out, uint64(r), 16)
	}
	return string(out)
}

// urlDecodeUniStep is urlDecodeUni, or an identity on values without '%' and '+' if
// Coraza's %u table could not be read.
func urlDecodeUniStep(s string) (string, bool) {
	i := strings.IndexAny(s, "%+")
	if i < 0 {
		return s, true
	}
	table := uniBytes()
	if table == nil {
		return "", false
	}
	return urlDecodeUni(s, i, table), true
}

// urlDecodeUni decodes, from s[i:] on, %XX, IIS's %uXXXX (to one byte: Coraza's best-fit
// ASCII character or the code point's low byte, see uniBytes) and '+'; invalid escapes
// stay as they are.
func urlDecodeUni(s string, i int, table *[1 << 16]byte) string {
	out := make([]byte, 0, len(s))
	out = append(out, s[:i]...)
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			out = append(out, ' ')
		case c != '%':
			out = append(out, c)
		case i+1 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U'):
			if i+5 < len(s) {
				if code, ok := hex4(s[i+2 : i+6]); ok {
					out = append(out, table[code])
					i += 5
					continue
				}
			}
			out = append(out, '%', s[i+1])
			i++
		case i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			out = append(out, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			out = append(out, c)
		}
	}
	return string(out)
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func hex4(s string) (int, bool) {
	code := 0
	for i := 0; i < 4; i++ {
		if !isHex(s[i]) {
			return 0, false
		}
		code = code<<4 | int(unhex(s[i]))
	}
	return code, true
}

// uniBytes is the byte Coraza's urlDecodeUni turns each %uXXXX into, read once from Coraza
// itself: one transaction decodes "%u0000%u0001…%uffff" (one byte each) through a rule
// with t:urlDecodeUni whose operator records the result. The table is Coraza's own (its
// best-fit map and low-byte fallback), so it cannot drift from the version in use.
var uniBytes = sync.OnceValue(func() *[1 << 16]byte {
	var in strings.Builder
	for code := 0; code < 1<<16; code++ {
		fmt.Fprintf(&in, "%%u%04x", code)
	}
	got, err := corazaTransform("urlDecodeUni", in.String())
	if err != nil || len(got) != 1<<16 {
		return nil // urlDecodeUni stays an identity on values without '%' and '+'
	}
	var table [1 << 16]byte
	copy(table[:], got)
	return &table
})

// captureOperatorName is an operator that hands the (transformed) value to captureSink.
const captureOperatorName = "gwcapture"

var (
	captureMu   sync.Mutex // one corazaTransform at a time
	captureSink func(string)
	captureWAFs = map[string]coraza.WAF{} // by transformation
)

type captureOp struct{}

func (captureOp) Evaluate(_ plugintypes.TransactionState, v string) bool {
	if captureSink != nil {
		captureSink(v)
	}
	return false
}

func newCaptureOp(plugintypes.OperatorOptions) (plugintypes.Operator, error) { return captureOp{}, nil }

// corazaTransform returns what Coraza's transformation name makes of v.
func corazaTransform(name, v string) (string, error) {
	registerOperators()
	captureMu.Lock()
	defer captureMu.Unlock()
	w, ok := captureWAFs[name]
	if !ok {
		var err error
		w, err = coraza.NewWAF(coraza.NewWAFConfig().WithDirectives(fmt.Sprintf(
			`SecRule ARGS_GET:x "@%s" "id:1,phase:1,pass,nolog,t:none,t:%s"`, captureOperatorName, name)))
		if err != nil {
			return "", err
		}
		captureWAFs[name] = w
	}
	var got []string
	captureSink = func(s string) { got = append(got, s) }
	defer func() { captureSink = nil }()
	tx := w.NewTransaction()
	tx.ProcessURI("/?x="+url.QueryEscape(v), "GET", "HTTP/1.1")
	tx.ProcessRequestHeaders()
	_ = tx.Close()
	if len(got) != 1 {
		return "", fmt.Errorf("%s: captured %d values", name, len(got))
	}
	return got[0], nil
}
