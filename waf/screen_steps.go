package waf

import (
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
)

// screenStep is one transformation as the screen knows it: apply computes exactly what
// Coraza's transformation of that name returns; otherwise changes reports whether the
// transformation could change the value (false means it returns the value unchanged).
type screenStep struct {
	apply   func(string) string
	changes func(string) bool
}

// screenSteps are the transformations the screen handles, by lowercase name. The exact
// ones are checked against Coraza's own (TestScreenTransformations); the others are
// identities on values without their trigger bytes, as their implementations in Coraza
// v3.8.1 begin by scanning for those bytes and return the input unchanged when none is
// found.
var screenSteps = map[string]screenStep{
	"lowercase":          {apply: strings.ToLower},
	"removenulls":        {apply: func(s string) string { return strings.ReplaceAll(s, "\x00", "") }},
	"htmlentitydecode":   {apply: html.UnescapeString},
	"compresswhitespace": {apply: compressWhitespace},
	"removewhitespace":   {apply: removeWhitespace},
	"cmdline":            {apply: cmdLine},
	"replacecomments":    {apply: replaceComments},
	"removecommentschar": {apply: removeCommentsChar},
	"normalizepath":      {apply: normalizePath},
	"normalisepath":      {apply: normalizePath},

	"urldecodeuni":    {changes: hasAnyByte("%+")},
	"urldecode":       {changes: hasAnyByte("%+")},
	"jsdecode":        {changes: hasAnyByte(`\`)},
	"cssdecode":       {changes: hasAnyByte(`\`)},
	"escapeseqdecode": {changes: hasAnyByte(`\`)},
	"utf8tounicode":   {changes: hasNonASCII},
	// normalizePathWin turns '\' into '/', cleans the path, strips alternate data streams
	// (':') and trailing dots and spaces: a value with none of those bytes is unchanged.
	"normalizepathwin": {changes: hasAnyByte(`/\:. `)},
	"normalisepathwin": {changes: hasAnyByte(`/\:. `)},
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
