package model

import (
	"fmt"
	"regexp"
	"strings"
)

// PathKind says how a path pattern matches.
type PathKind int

// The kinds of path pattern.
const (
	PathExact    PathKind = iota // "/health"
	PathPrefix                   // "/api/v1/users/*" matches "/api/v1/users/" and below
	PathTemplate                 // "/users/{id}/orders": one segment per variable
)

// PathMatch is a parsed path pattern. For templates, Regex is the RE2 equivalent anchored at
// both ends (Envoy's safe_regex and grpc-go's route matcher both accept it).
type PathMatch struct {
	Kind  PathKind
	Value string // exact path or prefix
	Regex string // for templates
}

var templateVar = regexp.MustCompile(`^\{([A-Za-z_][A-Za-z0-9_]*)(=\*\*|=\*)?\}$`)

// ParsePathPattern parses a route's path_pattern.
//   - "/x"         exact
//   - "/x/*"       prefix "/x/" (and "/x" itself is not matched); "/*" or "/" match everything
//   - "/a/{id}/b"  template; "{name=**}" as the last segment matches the rest of the path
func ParsePathPattern(p string) (PathMatch, error) {
	if !strings.HasPrefix(p, "/") {
		return PathMatch{}, fmt.Errorf("must start with '/'")
	}
	if strings.ContainsAny(p, " ?#") {
		return PathMatch{}, fmt.Errorf("must not contain spaces, '?' or '#'")
	}
	if p == "/" || p == "/*" {
		return PathMatch{Kind: PathPrefix, Value: "/"}, nil
	}
	if !strings.Contains(p, "{") && !strings.Contains(p, "}") {
		if strings.HasSuffix(p, "/*") {
			prefix := strings.TrimSuffix(p, "*")
			if strings.Contains(prefix, "*") {
				return PathMatch{}, fmt.Errorf("'*' is only allowed as the last segment")
			}
			return PathMatch{Kind: PathPrefix, Value: prefix}, nil
		}
		if strings.HasSuffix(p, "*") {
			prefix := strings.TrimSuffix(p, "*")
			if strings.Contains(prefix, "*") {
				return PathMatch{}, fmt.Errorf("'*' is only allowed at the end")
			}
			return PathMatch{Kind: PathPrefix, Value: prefix}, nil
		}
		if strings.Contains(p, "*") {
			return PathMatch{}, fmt.Errorf("'*' is only allowed at the end")
		}
		return PathMatch{Kind: PathExact, Value: p}, nil
	}
	segs := strings.Split(p[1:], "/")
	var b strings.Builder
	b.WriteString("^")
	seen := map[string]bool{}
	for i, s := range segs {
		b.WriteString("/")
		if strings.ContainsAny(s, "{}") {
			m := templateVar.FindStringSubmatch(s)
			if m == nil {
				return PathMatch{}, fmt.Errorf("segment %q: a variable must be a whole segment like {id} or {rest=**}", s)
			}
			if seen[m[1]] {
				return PathMatch{}, fmt.Errorf("variable %q appears twice", m[1])
			}
			seen[m[1]] = true
			if m[2] == "=**" {
				if i != len(segs)-1 {
					return PathMatch{}, fmt.Errorf("{%s=**} must be the last segment", m[1])
				}
				b.WriteString(".*")
				continue
			}
			b.WriteString("[^/]+")
			continue
		}
		if s == "*" {
			b.WriteString("[^/]+")
			continue
		}
		if strings.Contains(s, "*") {
			return PathMatch{}, fmt.Errorf("segment %q: '*' must be a whole segment", s)
		}
		b.WriteString(regexp.QuoteMeta(s))
	}
	b.WriteString("$")
	return PathMatch{Kind: PathTemplate, Regex: b.String()}, nil
}
