package extauthz

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// introspector checks opaque tokens with RFC 7662 token introspection. Answers are cached
// until the token's exp, at most cache_ttl (default 60s); inactive answers for at most
// negativeIntrospectionTTL.
//
// Every distinct unknown token costs an outbound call, and anyone can send one, so the cost
// an unauthenticated caller can cause is bounded three ways: tokens longer than
// max_token_bytes are refused before we get here; outbound calls are capped per second
// (max_calls_per_second, the excess denied 503, never failed open); and the cache is
// bounded in bytes (cache_bytes, least recently used evicted), keyed by a digest so it never
// holds the tokens themselves.
type introspector struct {
	url          string
	clientID     string
	clientSecret string
	ttl          time.Duration
	negTTL       time.Duration
	cacheBytes   int64
	callsPerSec  float64
	client       *http.Client
}

const (
	defaultIntrospectionTTL = time.Minute
	// negativeIntrospectionTTL is how long an inactive answer is kept: long enough that a
	// client retrying a dead token is not a call per request, short enough that junk tokens
	// do not occupy the cache.
	negativeIntrospectionTTL  = 10 * time.Second
	defaultIntrospectionBytes = 16 << 20
	// minIntrospectionBytes: under it (an answer may take an eighth) nothing would be
	// cached, and every check would be an outbound call. Settings refuse smaller values.
	minIntrospectionBytes      = 64 << 10
	defaultIntrospectionPerSec = 50
	// introEntryOverhead approximates the fixed cost of one cache entry (digest, list
	// element, entry struct, identity); answerWeight the decoded claims per byte of JSON.
	introEntryOverhead = 512
	answerWeight       = 3
)

// errIntrospectionThrottled: the outbound call budget is spent; denied 503, never failed open.
var errIntrospectionThrottled = errors.New("introspection: outbound call rate limit reached")

func newIntrospector(c *model.Introspection, client *http.Client) *introspector {
	in := &introspector{url: c.URL, clientID: c.ClientID, clientSecret: c.ClientSecret, ttl: c.CacheTTL.D(),
		cacheBytes: c.CacheBytes, callsPerSec: float64(c.MaxCallsPerSecond), client: client}
	if in.ttl <= 0 {
		in.ttl = defaultIntrospectionTTL
	}
	in.negTTL = min(in.ttl, negativeIntrospectionTTL)
	if in.cacheBytes <= 0 {
		in.cacheBytes = defaultIntrospectionBytes
	}
	in.cacheBytes = max(in.cacheBytes, minIntrospectionBytes)
	if in.callsPerSec <= 0 {
		in.callsPerSec = defaultIntrospectionPerSec
	}
	return in
}

type introEntry struct {
	active   bool
	identity Identity
	aud      []string
	until    time.Time
	memo     respMemo
	size     int64 // estimated bytes held (see introEntryOverhead)
}

type introKey [sha256.Size]byte

// introCall is one outbound call in flight; callers with the same token wait for it.
type introCall struct {
	done chan struct{}
	ent  *introEntry
	err  error
	// quit: the caller who made the call gave up (its context ended), so err says nothing
	// about the token or the endpoint; a waiting caller makes the call again.
	quit bool
}

type introSlot struct {
	key introKey
	ent *introEntry
}

// introCache is the engine's introspection state, shared across snapshots: the answers
// (LRU, bounded in bytes), the calls in flight, and the outbound call budget (a token
// bucket refilled at the introspector's calls per second, holding at most one second's).
type introCache struct {
	mu     sync.Mutex
	m      map[introKey]*list.Element
	lru    list.List // front: most recently used; values *introSlot
	bytes  int64
	flight map[introKey]*introCall

	budget     float64
	budgetTime time.Time
}

func newIntroCache() *introCache {
	return &introCache{m: map[introKey]*list.Element{}, flight: map[introKey]*introCall{}}
}

// size returns the bytes the cached answers are estimated to hold.
func (c *introCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

func (c *introCache) removeLocked(el *list.Element) {
	s := c.lru.Remove(el).(*introSlot)
	delete(c.m, s.key)
	c.bytes -= s.ent.size
}

// begin returns the cached answer, or the call in flight to wait for (leader false), or a
// new call the caller must make and finish (leader true).
func (c *introCache) begin(k introKey, now time.Time) (ent *introEntry, call *introCall, leader bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.m[k]; el != nil {
		s := el.Value.(*introSlot)
		if now.Before(s.ent.until) {
			c.lru.MoveToFront(el)
			return s.ent, nil, false
		}
		c.removeLocked(el)
	}
	if call = c.flight[k]; call != nil {
		return nil, call, false
	}
	call = &introCall{done: make(chan struct{})}
	c.flight[k] = call
	return nil, call, true
}

// spend takes one outbound call from the budget, reporting false when none is left.
func (c *introCache) spend(now time.Time, perSec float64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.budgetTime.IsZero() {
		c.budget, c.budgetTime = perSec, now
	}
	switch el := now.Sub(c.budgetTime); {
	case el > 0:
		c.budget = min(perSec, c.budget+el.Seconds()*perSec)
		c.budgetTime = now
	case el < -time.Second:
		// The wall clock was stepped back: refill from the new reading on, rather than not
		// at all until the clock catches up. (Checks a little out of order are not steps.)
		c.budgetTime = now
	}
	c.budget = min(c.budget, perSec) // the rate may have been lowered by a new snapshot
	if c.budget < 1 {
		return false
	}
	c.budget--
	return true
}

// finish publishes the call's result to its waiters and caches a successful answer, evicting
// the least recently used answers to stay within maxBytes. An answer larger than an eighth
// of the cache is not cached: one huge answer must not flush everyone else's.
func (c *introCache) finish(k introKey, call *introCall, ent *introEntry, err error, quit bool, maxBytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	call.ent, call.err, call.quit = ent, err, quit
	delete(c.flight, k)
	close(call.done)
	if err != nil || ent.size > maxBytes/8 {
		return
	}
	if el := c.m[k]; el != nil {
		c.removeLocked(el)
	}
	for c.bytes+ent.size > maxBytes && c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back())
	}
	c.m[k] = c.lru.PushFront(&introSlot{key: k, ent: ent})
	c.bytes += ent.size
}

// introspect returns the token's identity, from the cache, a call in flight or the endpoint.
func (e *Engine) introspect(ctx context.Context, in *introspector, tok string, now time.Time) (*introEntry, *authFailure) {
	h := sha256.New()
	h.Write([]byte(in.url))
	h.Write([]byte{0})
	h.Write([]byte(tok))
	var k introKey
	h.Sum(k[:0])
	for {
		ent, call, leader := e.intro.begin(k, now)
		if ent != nil {
			return ent, nil
		}
		var err error
		if leader {
			if e.intro.spend(e.now(), in.callsPerSec) {
				ent, err = in.call(ctx, tok, now)
			} else {
				err = errIntrospectionThrottled
			}
			e.intro.finish(k, call, ent, err, err != nil && ctx.Err() != nil, in.cacheBytes)
		} else {
			select {
			case <-call.done:
			case <-ctx.Done():
				return nil, e.introFailure(ctx.Err())
			}
			if call.quit {
				continue // its caller gave up: ask again, under our own deadline
			}
			ent, err = call.ent, call.err
		}
		if err != nil {
			return nil, e.introFailure(err)
		}
		return ent, nil
	}
}

func (e *Engine) introFailure(err error) *authFailure {
	if errors.Is(err, errIntrospectionThrottled) {
		e.metrics.IntrospectionThrottled.Inc()
		// Not a dependency failure, so never failed open: the budget is spent by whoever
		// sends junk tokens, and fail_open must not be a door any anonymous caller opens.
		return &authFailure{status: 503, reason: ReasonAuthUnavailable, msg: "token introspection is unavailable"}
	}
	return &authFailure{status: 503, reason: ReasonAuthUnavailable, msg: "token introspection is unavailable", dependency: err}
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
	// An inactive answer keeps nothing of the body.
	ent := &introEntry{until: now.Add(in.negTTL), size: introEntryOverhead}
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
		ent.until = now.Add(in.ttl)
		if t.Before(ent.until) {
			ent.until = t
		}
	} else {
		ent.until = now.Add(in.ttl)
	}
	if nbf, ok := claims["nbf"].(float64); ok && now.Before(time.Unix(int64(nbf), 0).Add(-defaultClockSkew)) {
		ent.active, ent.until = false, now.Add(in.negTTL)
		return ent, nil
	}
	ent.size += answerWeight * int64(len(body))
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
