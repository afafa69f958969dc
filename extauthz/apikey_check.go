package extauthz

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/netip"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// keyEntry is one API key, precomputed for the request path.
type keyEntry struct {
	id        string
	hash      [32]byte
	hashOK    bool
	userID    string
	tenant    string
	scopes    []string
	revoked   bool
	expiresAt time.Time
	ips       *ipSet // nil: any address
	routes    map[string]bool
	windows   []timeWindow
	perDay    int64
	perMonth  int64
	memo      respMemo
}

type timeWindow struct {
	loc        *time.Location
	days       uint8 // bit per weekday; 0 = every day
	start, end int   // minutes after midnight
}

// in reports whether t falls in the window. A window with end < start spans midnight; its
// part after midnight belongs to the previous day's window.
func (w *timeWindow) in(t time.Time) bool {
	lt := t.In(w.loc)
	m := lt.Hour()*60 + lt.Minute()
	day := lt.Weekday()
	switch {
	case w.start == w.end:
		// a full day
	case w.start < w.end:
		if m < w.start || m >= w.end {
			return false
		}
	default:
		if m >= w.start {
			break
		}
		if m >= w.end {
			return false
		}
		day = (day + 6) % 7
	}
	return w.days == 0 || w.days&(1<<uint(day)) != 0
}

// buildKey precomputes a key; locations are cached across keys.
func buildKey(k *model.APIKey, locs map[string]*time.Location) *keyEntry {
	e := &keyEntry{id: k.ID, userID: k.UserID, tenant: k.Tenant, scopes: k.Scopes, revoked: k.Revoked}
	e.hash, e.hashOK = parseStoredHash(k.SecretHash)
	if k.ExpiresAt != nil {
		e.expiresAt = *k.ExpiresAt
	}
	if q := k.Quota; q != nil {
		e.perDay, e.perMonth = q.PerDay, q.PerMonth
	}
	if r := k.Restrictions; r != nil {
		if len(r.AllowedIPs) > 0 {
			e.ips = &ipSet{}
			for _, ip := range r.AllowedIPs {
				_ = e.ips.add(ip, time.Time{}) // validated by the model; a bad entry matches nothing
			}
		}
		if len(r.AllowedRoutes) > 0 {
			e.routes = make(map[string]bool, len(r.AllowedRoutes))
			for _, id := range r.AllowedRoutes {
				e.routes[id] = true
			}
		}
		for _, w := range r.AllowedTimeWindows {
			tw := timeWindow{loc: time.UTC}
			if w.Timezone != "" {
				loc, ok := locs[w.Timezone]
				if !ok {
					var err error
					if loc, err = time.LoadLocation(w.Timezone); err != nil {
						loc = nil
					}
					locs[w.Timezone] = loc
				}
				if loc == nil {
					// An unknown zone cannot be honoured: the window never matches (fail closed).
					tw.start, tw.end, tw.days = 0, 0, 0x80
					e.windows = append(e.windows, tw)
					continue
				}
				tw.loc = loc
			}
			var err1, err2 error
			tw.start, err1 = model.ParseClock(w.Start)
			tw.end, err2 = model.ParseClock(w.End)
			if err1 != nil || err2 != nil {
				// Never matches: bit 7 is no weekday, and no day bit may be added to it
				// (start=end=0 would otherwise read as "all day" on the listed days).
				tw.start, tw.end, tw.days = 0, 0, 0x80
				e.windows = append(e.windows, tw)
				continue
			}
			for _, d := range w.Days {
				if wd, ok := model.Weekday(d); ok {
					tw.days |= 1 << uint(wd)
				}
			}
			e.windows = append(e.windows, tw)
		}
	}
	return e
}

// dummyHash is compared against when the key id is unknown, so an unknown id and a wrong
// secret take the same time and get the same answer.
var dummyHash = sha256.Sum256([]byte("agw-unknown-key"))

// conflictingKeys is what apiKeyCredential returns for two different keys: it is never a
// valid key (it has no "agw_" shape), so the request is a 401 invalid_api_key.
const conflictingKeys = "\x00conflicting-api-keys"

// apiKeyCredential extracts the key from x-api-key or "Authorization: ApiKey ...". A
// request carrying two different keys is ambiguous (which one did the caller mean, which
// one will the upstream read?) and gets a credential that never verifies.
func apiKeyCredential(h map[string]string) string {
	hk, hasHeader := h["x-api-key"]
	hk = strings.TrimSpace(hk)
	ak := ""
	if a := h["authorization"]; len(a) > 7 && strings.EqualFold(a[:7], "apikey ") {
		ak = strings.TrimSpace(a[7:])
	}
	switch {
	case hasHeader && hk == "" && ak == "" && h["x-api-key"] != "":
		return conflictingKeys // whitespace only: a key was sent, and it is not valid
	case hk != "" && ak != "" && hk != ak:
		return conflictingKeys
	case hk != "":
		return hk
	}
	return ak
}

// verifyKey finds and verifies the key. Every failure before the secret is proven correct
// is ReasonInvalidAPIKey.
func (t *tables) verifyKey(secret string) (*keyEntry, bool) {
	id, ok := ParseAPIKey(secret)
	var e *keyEntry
	if ok {
		e = t.keys[id]
	}
	got := sha256.Sum256([]byte(secret))
	want := &dummyHash
	if e != nil && e.hashOK {
		want = &e.hash
	}
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	if e == nil || !e.hashOK || !match {
		return nil, false
	}
	return e, true
}

// checkKeyUse applies the key's own restrictions once the secret is proven.
func (e *keyEntry) checkUse(routeID string, client netip.Addr, now time.Time) (status int, reason, msg string) {
	if e.revoked {
		return 401, ReasonAPIKeyRevoked, "the API key has been revoked"
	}
	if !e.expiresAt.IsZero() && !now.Before(e.expiresAt) {
		return 401, ReasonAPIKeyExpired, "the API key has expired"
	}
	if e.routes != nil && !e.routes[routeID] {
		return 403, ReasonKeyRouteNotAllowed, "the API key may not be used on this route"
	}
	if e.ips != nil && !e.ips.contains(client, now) {
		return 403, ReasonKeyIPNotAllowed, "the API key may not be used from this address"
	}
	if len(e.windows) > 0 {
		in := false
		for i := range e.windows {
			if e.windows[i].in(now) {
				in = true
				break
			}
		}
		if !in {
			return 403, ReasonKeyOutsideWindow, "the API key may not be used at this time"
		}
	}
	return 0, "", ""
}
