package ratelimit

import (
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// headerInfo is what the response headers report: the descriptor closest to its limit (or
// the one that denied).
type headerInfo struct {
	lim        *limitDef
	rule       *ruleDef
	remaining  uint64
	reset      int64 // µs
	retryAfter int64 // µs
	denied     bool
}

func seconds(us int64) string {
	if us <= 0 {
		return "0"
	}
	return strconv.FormatInt((us+999_999)/1_000_000, 10)
}

func sfString(s string) string {
	if !strings.ContainsAny(s, "\"\\") {
		return `"` + s + `"`
	}
	return strconv.Quote(s)
}

// responseHeaders builds x-ratelimit-*, retry-after (on 429) and the IETF RateLimit /
// RateLimit-Policy pair, each as the limit's headers block selects.
func responseHeaders(h *headerInfo, overLimit bool) []*corev3.HeaderValue {
	sel := h.lim.headers
	out := make([]*corev3.HeaderValue, 0, 6)
	add := func(k, v string) { out = append(out, &corev3.HeaderValue{Key: k, Value: v}) }
	limit := strconv.FormatUint(h.rule.requests, 10)
	remaining := strconv.FormatUint(h.remaining, 10)
	reset := seconds(h.reset)
	if sel.Limit {
		add("x-ratelimit-limit", limit)
	}
	if sel.Remaining {
		add("x-ratelimit-remaining", remaining)
	}
	if sel.Reset {
		add("x-ratelimit-reset", reset)
	}
	if sel.RetryAfter && overLimit && h.denied {
		ra := h.retryAfter
		if ra <= 0 {
			ra = h.reset
		}
		if ra < 1_000_000 {
			ra = 1_000_000
		}
		add("retry-after", seconds(ra))
	}
	if sel.IETF {
		name := h.lim.name
		if name == "" {
			name = h.lim.label
		}
		w := h.rule.window
		if h.rule.calendar != "" {
			w = (h.reset + 999_999) / 1_000_000
		}
		add("ratelimit-policy", sfString(name)+";q="+limit+";w="+strconv.FormatInt(w, 10))
		add("ratelimit", sfString(name)+";r="+remaining+";t="+reset)
	}
	return out
}
