package extauthz

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/api-gateway/api-gateway/model"
)

// issuer is one trusted JWT issuer, compiled per snapshot; its key source outlives snapshots.
type issuer struct {
	iss       string
	fp        string // the issuer's settings: a cached verification is valid only under the same
	src       *keySource
	algs      map[string]bool
	parser    *jwt.Parser
	leeway    time.Duration
	userClaim string
	tenant    []string // claim paths tried in order
	roles     string
	scopes    []string
}

const defaultClockSkew = 30 * time.Second

func newIssuer(c model.JWTIssuer, src *keySource, now func() time.Time) *issuer {
	fp, _ := json.Marshal(c)
	is := &issuer{iss: c.Issuer, fp: string(fp), src: src, algs: map[string]bool{}, leeway: defaultClockSkew,
		userClaim: "sub", roles: "roles", scopes: []string{"scope", "scp"}, tenant: []string{"tenant_id", "tenant"}}
	algs := c.Algorithms
	if len(algs) == 0 {
		algs = model.JWTAlgorithms
	}
	for _, a := range algs {
		if contains(model.JWTAlgorithms, a) { // never none, never HMAC
			is.algs[a] = true
		}
	}
	if c.ClockSkew > 0 {
		is.leeway = c.ClockSkew.D()
	}
	if c.UserClaim != "" {
		is.userClaim = c.UserClaim
	}
	if c.TenantClaim != "" {
		is.tenant = []string{c.TenantClaim}
	}
	if c.RolesClaim != "" {
		is.roles = c.RolesClaim
	}
	if c.ScopesClaim != "" {
		is.scopes = []string{c.ScopesClaim}
	}
	valid := make([]string, 0, len(is.algs))
	for a := range is.algs {
		valid = append(valid, a)
	}
	opts := []jwt.ParserOption{jwt.WithValidMethods(valid), jwt.WithLeeway(is.leeway), jwt.WithIssuer(c.Issuer),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(now)}
	if len(c.Audiences) > 0 {
		opts = append(opts, jwt.WithAudience(c.Audiences...))
	}
	is.parser = jwt.NewParser(opts...)
	return is
}

// keyMatchesAlg reports whether a key may verify a token signed with alg: RSA keys only RS*
// and PS*, EC keys only the ES* of their curve, Ed25519 only EdDSA. This is what stops
// algorithm confusion (an HS256 token "signed" with a public key never reaches a verifier).
func keyMatchesAlg(k *jwk, alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch key := k.key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch key.Curve.Params().Name {
		case "P-256":
			return alg == "ES256"
		case "P-384":
			return alg == "ES384"
		case "P-521":
			return alg == "ES512"
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// tokenInfo is a verified token, cached until it expires.
type tokenInfo struct {
	identity    Identity
	audiences   []string
	exp         time.Time
	src         *keySource
	issuerFP    string // issuer.fp at verification: settings changes invalidate the entry
	keysVersion uint64
	memo        respMemo
}

// errKeysUnavailable marks a dependency failure (no keys could be fetched).
var errKeysUnavailable = errors.New("signing keys unavailable")

// authFailure is a credential checker's denial.
type authFailure struct {
	status     int
	reason     string
	msg        string
	dependency error // set when a dependency failed (fail-open candidates)
}

var unverifiedParser = jwt.NewParser()

// verifyJWT verifies a token against the configured issuers, using the verified-token cache.
// A token the route refuses by its unverified issuer or audience is refused before its keys
// are looked up (see routePolicy.refuses).
func (e *Engine) verifyJWT(ctx context.Context, t *tables, rp *routePolicy, raw string, now time.Time) (*tokenInfo, *authFailure) {
	if ti := e.tokens.get(raw); ti != nil {
		if cur := ti.src.current(); cur != nil && cur.version == ti.keysVersion && now.Before(ti.exp) {
			if is := t.issuers[ti.identity.Issuer]; is != nil && is.src == ti.src && is.fp == ti.issuerFP {
				return ti, nil
			}
		}
		e.tokens.del(raw)
	}
	claims := jwt.MapClaims{}
	tok, _, err := unverifiedParser.ParseUnverified(raw, claims)
	if err != nil {
		return nil, &authFailure{status: 401, reason: ReasonInvalidToken, msg: "the bearer token is malformed"}
	}
	if _, ok := tok.Header["crit"]; ok {
		// RFC 7515 4.1.11: extensions the verifier does not understand must be rejected
		// (e.g. "b64": false changes what the signature covers). None is understood here.
		return nil, &authFailure{status: 401, reason: ReasonInvalidToken, msg: "the bearer token is invalid"}
	}
	iss, _ := claims["iss"].(string)
	is := t.issuers[iss]
	if is == nil {
		return nil, &authFailure{status: 401, reason: ReasonInvalidIssuer, msg: "the token's issuer is not trusted"}
	}
	// The claims are not verified yet, so they may only refuse: a token this route refuses
	// anyway must not reach a key lookup, whose failure (that issuer's JWKS down) would
	// fail the route open for a token nothing checked.
	aud, _ := claims.GetAudience()
	if f := rp.refuses(iss, aud); f != nil {
		return nil, f
	}
	alg, _ := tok.Header["alg"].(string)
	if !is.algs[alg] {
		return nil, &authFailure{status: 401, reason: ReasonInvalidToken, msg: "the token's signing algorithm is not accepted"}
	}
	kid, _ := tok.Header["kid"].(string)
	key, ks, kerr := is.src.lookup(ctx, kid)
	if kerr != nil {
		return nil, &authFailure{status: 503, reason: ReasonAuthUnavailable, msg: "token signing keys are unavailable",
			dependency: fmt.Errorf("%w: %v", errKeysUnavailable, kerr)}
	}
	if key == nil {
		return nil, &authFailure{status: 401, reason: ReasonUnknownKey, msg: "the token's signing key is unknown"}
	}
	if !keyMatchesAlg(key, alg) {
		return nil, &authFailure{status: 401, reason: ReasonInvalidToken, msg: "the token's signing algorithm does not match its key"}
	}
	vclaims := jwt.MapClaims{}
	_, err = is.parser.ParseWithClaims(raw, vclaims, func(*jwt.Token) (any, error) { return key.key, nil })
	if err != nil {
		return nil, jwtFailure(err)
	}
	ti := &tokenInfo{src: is.src, issuerFP: is.fp, keysVersion: ks.version}
	ti.identity = is.identity(vclaims)
	if aud, err := vclaims.GetAudience(); err == nil {
		ti.audiences = aud
	}
	exp, _ := vclaims.GetExpirationTime()
	ti.exp = exp.Add(is.leeway)
	// Cache only tokens valid now (not-yet-valid ones were rejected above).
	e.tokens.put(raw, ti, now)
	return ti, nil
}

func jwtFailure(err error) *authFailure {
	f := &authFailure{status: 401, reason: ReasonInvalidToken, msg: "the bearer token is invalid"}
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		f.reason, f.msg = ReasonTokenExpired, "the bearer token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		f.reason, f.msg = ReasonTokenNotYetValid, "the bearer token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		f.reason, f.msg = ReasonInvalidAudience, "the bearer token is not for this audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		f.reason, f.msg = ReasonInvalidIssuer, "the token's issuer is not trusted"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		f.reason, f.msg = ReasonInvalidSignature, "the bearer token's signature is invalid"
	}
	return f
}

// identity extracts the caller's identity from verified claims.
func (is *issuer) identity(c jwt.MapClaims) Identity {
	id := Identity{Method: MethodJWT, Issuer: is.iss, Claims: map[string]any(c)}
	id.UserID = claimString(c, is.userClaim)
	for _, p := range is.tenant {
		if v := claimString(c, p); v != "" {
			id.Tenant = v
			break
		}
	}
	id.Roles = claimList(c, is.roles)
	for _, p := range is.scopes {
		if s := claimList(c, p); len(s) > 0 {
			id.Scopes = s
			break
		}
	}
	return id
}

// claimValue follows a dotted path ("realm_access.roles") through nested objects.
func claimValue(c map[string]any, path string) (any, bool) {
	if v, ok := c[path]; ok {
		return v, true
	}
	var cur any = c
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// claimString formats a claim for a header: strings as they are, numbers and booleans in
// JSON form, lists joined with ",", objects as JSON.
func claimString(c map[string]any, path string) string {
	v, ok := claimValue(c, path)
	if !ok || v == nil {
		return ""
	}
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				parts = append(parts, s)
			} else {
				b, _ := json.Marshal(e)
				parts = append(parts, string(b))
			}
		}
		return strings.Join(parts, ",")
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// claimList reads a list claim: a JSON array of strings or a space-separated string.
func claimList(c map[string]any, path string) []string {
	v, ok := claimValue(c, path)
	if !ok {
		return nil
	}
	switch x := v.(type) {
	case string:
		return strings.Fields(x)
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// tokenCache holds verified tokens until they expire, keyed by the token (Go's map hashes
// it; the whole token is compared on a hit). Bounded: a full shard is cleared.
type tokenCache struct {
	shards [16]tokenShard
	max    int // per shard
}

type tokenShard struct {
	mu sync.RWMutex
	m  map[string]*tokenInfo
}

func newTokenCache(size int) *tokenCache {
	if size <= 0 {
		size = 65536
	}
	c := &tokenCache{max: size/16 + 1}
	for i := range c.shards {
		c.shards[i].m = map[string]*tokenInfo{}
	}
	return c
}

func (c *tokenCache) shard(k string) *tokenShard {
	// the signature's last bytes are uniformly distributed
	return &c.shards[k[len(k)-1]&15]
}

func (c *tokenCache) get(k string) *tokenInfo {
	if k == "" {
		return nil
	}
	s := c.shard(k)
	s.mu.RLock()
	v := s.m[k]
	s.mu.RUnlock()
	return v
}

func (c *tokenCache) put(k string, v *tokenInfo, now time.Time) {
	s := c.shard(k)
	s.mu.Lock()
	if len(s.m) >= c.max {
		for key, old := range s.m { // drop expired entries first
			if !now.Before(old.exp) {
				delete(s.m, key)
			}
		}
		if len(s.m) >= c.max {
			clear(s.m)
		}
	}
	s.m[k] = v
	s.mu.Unlock()
}

func (c *tokenCache) del(k string) {
	s := c.shard(k)
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
