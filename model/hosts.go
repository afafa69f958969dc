package model

import (
	"net"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The host forms a route's hosts accept, which become Envoy virtual-host domains:
//
//	*                      every host (the default)
//	api.example.com        a DNS name (ASCII; case does not matter)
//	*.example.com          any subdomain (Envoy's suffix wildcard)
//	*-bar.example.com      Envoy's other suffix wildcards: '*' then any name suffix, or
//	*:8080                 ":port" (any host on that port)
//	api.*, api-*           Envoy's prefix wildcards: a name prefix then '*'
//	10.0.0.1, [2001:db8::1] an IP literal, IPv6 in brackets as in a Host header
//	any of those but '*' with ":port", or ":*" for any port (Envoy's suffix wildcard; the
//	translator adds "host:*" to every host without a port)
//
// Anything else (tab, ';', ',', NUL, a space, a path, a non-ASCII look-alike of an ASCII
// name) used to be accepted and either made Envoy NACK the whole route configuration or
// created a virtual host no request can reach.

// virtualHostProblem returns why h is not a route host, or "".
func virtualHostProblem(h string) string {
	if h == "*" {
		return ""
	}
	return hostPortProblem(h, true)
}

// hostHeaderProblem returns why h is not a Host header value for rewrite.host, or "".
func hostHeaderProblem(h string) string { return hostPortProblem(h, false) }

func hostPortProblem(h string, wildcard bool) string {
	const form = "must be a DNS name, an IPv4 address or a bracketed IPv6 address, optionally with ':port'"
	want := form
	if wildcard {
		want = "must be '*', a DNS name (optionally starting with '*.'), an IPv4 address or a bracketed IPv6 address, optionally with ':port' or ':*', " +
			"or an Envoy wildcard: '*' before a name suffix or ':port' (\"*-api.example.com\", \"*:8080\"), or a name prefix before '*' (\"api.*\")"
	}
	switch {
	case h == "":
		return "must not be empty"
	case len(h) > 261: // 253 for the name, 8 for ":65535" and brackets
		return "must be at most 253 characters and a port"
	case !utf8.ValidString(h):
		return "must be valid UTF-8"
	}
	for _, r := range h {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return "must not contain spaces or control characters; " + want
		}
		if r > unicode.MaxASCII {
			// A Host header is ASCII; a Unicode name (or a Cyrillic look-alike of a Latin
			// one) must be written in its IDNA "xn--" form, which is what clients send.
			return "must be ASCII: write an internationalized name in its punycode form (xn--...)"
		}
	}
	if wildcard && len(h) > 1 && strings.Count(h, "*") == 1 {
		if p, ok := envoyWildcardProblem(h); ok {
			if p != "" {
				return want
			}
			return ""
		}
	}
	host, port, hasPort := splitPort(h)
	if hasPort && !(wildcard && port == "*") {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
			return "port must be 1-65535; " + want
		}
	}
	if strings.HasPrefix(host, "[") {
		ip := net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		if !strings.HasSuffix(host, "]") || ip == nil || ip.To4() != nil {
			return want
		}
		return ""
	}
	if strings.Contains(host, ":") {
		return "an IPv6 address must be in brackets ([2001:db8::1]); " + want
	}
	name := host
	if wildcard && strings.HasPrefix(name, "*.") {
		name = name[2:]
	}
	if !validHost(name) || net.ParseIP(name) != nil && name != host {
		return want
	}
	return ""
}

// envoyWildcardProblem checks Envoy's suffix and prefix wildcards other than "*.name" and
// "name:*" (which the general form covers): a leading '*' before any suffix of a host[:port]
// ("*-bar.foo.com", "*:8080"), a trailing '*' after any prefix of a host name ("foo.*",
// "foo-*"). Envoy matches them by suffix and prefix (RouteMatcher in Envoy's
// source/common/router/config_impl.cc), the wildcard never matching the empty string, so
// the '*' is checked as if it were one letter. ok is false for hosts not of these forms.
func envoyWildcardProblem(h string) (problem string, ok bool) {
	switch {
	case h[0] == '*' && !strings.HasPrefix(h, "*."):
		rest := h[1:]
		if strings.HasPrefix(rest, ":") {
			// "*:port": any host on that port.
			if n, err := strconv.Atoi(rest[1:]); err != nil || n < 1 || n > 65535 || rest[1] == '0' || rest[1] == '+' {
				return "bad port", true
			}
			return "", true
		}
		return hostPortProblem("x"+rest, false), true
	case h[len(h)-1] == '*' && !strings.HasSuffix(h, ":*"):
		stem := h[:len(h)-1]
		if strings.ContainsAny(stem, ":[]") || !validHost(stem+"x") {
			return "bad prefix", true
		}
		return "", true
	}
	return "", false
}

// splitPort splits "host:port" when the part after the last ':' can only be a port (an
// IPv6 literal is bracketed, so a bare one has no port).
func splitPort(h string) (host, port string, ok bool) {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.Count(h, ":") > 1 && !strings.HasPrefix(h, "[") {
		return h, "", false
	}
	if strings.HasPrefix(h, "[") && !strings.HasSuffix(h[:i], "]") {
		return h, "", false // "[::1]" alone: the last ':' is inside the brackets
	}
	if i == len(h)-1 {
		return h[:i], "x", true // "host:" has an empty port: reported as a bad port
	}
	return h[:i], h[i+1:], true
}

// cookiePathProblem returns why p is not a cookie Path attribute, or "". RFC 6265 §4.1.1
// (path-value: any CHAR except CTLs or ';'); a CR or LF in it would split the Set-Cookie
// header Envoy writes, and a path not starting with '/' is ignored by browsers (§5.2.4).
func cookiePathProblem(p string) string {
	if p == "" {
		return ""
	}
	if len(p) > 1024 {
		return "must be at most 1024 characters"
	}
	// A path without a leading '/' is not refused: browsers then use the default path
	// (RFC 6265 5.2.4), and routes stored with one kept working before this check existed.
	for _, r := range p {
		if r < 0x20 || r == 0x7f || r == ';' || r > unicode.MaxASCII {
			return "must be printable ASCII without ';' (no control characters such as CR or LF)"
		}
	}
	return ""
}
