package extauthz

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/proto/model"
)

// introspector checks opaque tokens with RFC 7662 token introspection. Answers are cached
// until the token's exp, at most cache_ttl (default 60s); inactive answers for cache_ttl too.
type introspector struct {
	url          string
	clientID     string
	clientSecret string
	ttl          time.Duration
	client       *http.Client
}

const defaultIntrospectionTTL = time.Minute

func newIntrospector(c *model.Introspection, client *http.Client) *introspector {
	in := &introspector{url: c.URL, clientID: c.ClientID, clientSecret: c.ClientSecret, ttl: c.CacheTTL.D(), client: client}
	if in.ttl <= 0 {
		in.ttl = defaultIntrospectionTTL
	}
	return in
}

type introEntry struct {
	active   bool
	identity Identity
	aud      []string
	until    time.Time
	memo     respMemo
}

type introCache struct {
	mu  sync.Mutex
	m   map[string]*introEntry
	max int
}

func (c *introCache) get(k string, now time.Time) *introEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[k]
	if e != nil && !now.Before(e.until) {
		delete(c.m, k)
		return nil
	}
	return e
}

func (c *introCache) put(k string, e *introEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for key, old := range c.m {
			if !now.Before(old.until) {
				delete(c.m, key)
			}
		}
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[k] = e
}

// introspect returns the token's identity, from the cache or the endpoint.
func (e *Engine) introspect(ctx context.Context, in *introspector, tok string, now time.Time) (*introEntry, *authFailure) {
	key := in.url + "\x00" + tok
	if ent := e.intro.get(key, now); ent != nil {
		return ent, nil
	}
	ent, err := in.call(ctx, tok, now)
	if err != nil {
		return nil, &authFailure{status: 503, reason: ReasonAuthUnavailable, msg: "token introspection is unavailable", dependency: err}
	}
	e.intro.put(key, ent, now)
	return ent, nil
}

func (in *introspector) call(ctx context.Context, tok string, now time.Time) (*introEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.url, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if in.clientID != "" {
		req.SetBasicAuth(url.QueryEscape(in.clientID), url.QueryEscape(in.clientSecret))
	}
	resp, err := in.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("introspection: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody))
	if err != nil {
		return nil, fmt.Errorf("introspection: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("introspection: status %d", resp.StatusCode)
	}
	var claims map[string]any
	if err := json.Unmarshal(body, &claims); err != nil {
		return nil, fmt.Errorf("introspection: %w", err)
	}
	ent := &introEntry{until: now.Add(in.ttl)}
	ent.active, _ = claims["active"].(bool)
	if !ent.active {
		return ent, nil
	}
	if exp, ok := claims["exp"].(float64); ok {
		t := time.Unix(int64(exp), 0)
		if !now.Before(t) {
			ent.active = false
			return ent, nil
		}
		if t.Before(ent.until) {
			ent.until = t
		}
	}
	if nbf, ok := claims["nbf"].(float64); ok && now.Before(time.Unix(int64(nbf), 0).Add(-defaultClockSkew)) {
		ent.active = false
		return ent, nil
	}
	id := Identity{Method: MethodIntrospection, Claims: claims}
	id.UserID = claimString(claims, "sub")
	if id.UserID == "" {
		id.UserID = claimString(claims, "username")
	}
	id.Issuer = claimString(claims, "iss")
	for _, p := range []string{"tenant_id", "tenant"} {
		if v := claimString(claims, p); v != "" {
			id.Tenant = v
			break
		}
	}
	id.Scopes = claimList(claims, "scope")
	id.Roles = claimList(claims, "roles")
	ent.identity = id
	ent.aud = claimList(claims, "aud")
	return ent, nil
}
