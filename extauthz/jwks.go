package extauthz

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// jwk is one public key of a JWKS.
type jwk struct {
	kid string
	alg string // optional "alg" of the JWK
	key crypto.PublicKey
}

// keySet is one fetched JWKS; version changes whenever the set's content changes.
type keySet struct {
	version uint64
	byKid   map[string]*jwk
	all     []*jwk
}

type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// parseJWKS reads a JWK Set: RSA, EC (P-256/384/521) and OKP Ed25519 public keys. Keys of
// other types, encryption keys and symmetric keys are skipped, never used.
func parseJWKS(body []byte) ([]*jwk, error) {
	var doc struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	var out []*jwk
	for _, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		var pub crypto.PublicKey
		switch k.Kty {
		case "RSA":
			n, err1 := b64(k.N)
			e, err2 := b64(k.E)
			if err1 != nil || err2 != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
				continue // under 2048 bits or malformed
			}
			ev := 0
			for _, c := range e {
				ev = ev<<8 | int(c)
			}
			pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: ev}
		case "EC":
			var curve elliptic.Curve
			switch k.Crv {
			case "P-256":
				curve = elliptic.P256()
			case "P-384":
				curve = elliptic.P384()
			case "P-521":
				curve = elliptic.P521()
			default:
				continue
			}
			x, err1 := b64(k.X)
			y, err2 := b64(k.Y)
			if err1 != nil || err2 != nil {
				continue
			}
			size := (curve.Params().BitSize + 7) / 8
			if len(x) > size || len(y) > size {
				continue
			}
			// Build the uncompressed point and let crypto/ecdsa check it is on the curve.
			pt := make([]byte, 1+2*size)
			pt[0] = 4
			copy(pt[1+size-len(x):1+size], x)
			copy(pt[1+2*size-len(y):], y)
			ek, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
			if err != nil {
				continue
			}
			pub = ek
		case "OKP":
			if k.Crv != "Ed25519" {
				continue
			}
			x, err := b64(k.X)
			if err != nil || len(x) != ed25519.PublicKeySize {
				continue
			}
			pub = ed25519.PublicKey(x)
		default:
			continue
		}
		out = append(out, &jwk{kid: k.Kid, alg: k.Alg, key: pub})
	}
	return out, nil
}

// keySource fetches and caches one issuer's JWKS (from jwks_uri, or from OIDC discovery).
// Keys are refreshed in the background before they go stale (Cache-Control max-age, bounded
// by the refresh interval), refetched at most once per refetch interval when a token names an
// unknown kid, and kept when the endpoint is down.
type keySource struct {
	issuer   string
	jwksURI  string // configured; empty = discover
	client   *http.Client
	now      func() time.Time
	interval time.Duration // background refresh interval (and max-age cap)
	refetch  time.Duration // minimum time between fetches triggered by unknown kids

	keys atomic.Pointer[keySet]

	// lock (a one-slot channel, so a check can stop waiting when its deadline passes)
	// serializes fetches and guards the fields below.
	lock        chan struct{}
	discovered  string
	lastAttempt time.Time
	nextRefresh time.Time
	lastErr     error
	lastSum     [32]byte
	version     uint64
}

const (
	defaultRefreshInterval = 5 * time.Minute
	defaultRefetchInterval = 30 * time.Second
	minRefresh             = 5 * time.Second
	fetchTimeout           = 5 * time.Second
	maxJWKSBody            = 1 << 20
)

func newKeySource(issuer, jwksURI string, refresh time.Duration, client *http.Client, now func() time.Time) *keySource {
	s := &keySource{issuer: issuer, jwksURI: jwksURI, client: client, now: now,
		interval: defaultRefreshInterval, refetch: defaultRefetchInterval, lock: make(chan struct{}, 1)}
	if refresh > 0 {
		s.interval, s.refetch = refresh, refresh
	}
	return s
}

// current returns the cached keys (nil before the first successful fetch).
func (s *keySource) current() *keySet { return s.keys.Load() }

// lookup returns the key for kid. When kid is unknown (or nothing is cached yet) it refetches,
// at most once per refetch interval. The error is set only when no keys could ever be
// fetched (a dependency failure).
func (s *keySource) lookup(ctx context.Context, kid string) (*jwk, *keySet, error) {
	ks := s.current()
	if k := ks.find(kid); k != nil {
		return k, ks, nil
	}
	// Another check may be fetching (up to fetchTimeout); wait for it no longer than this
	// check's own deadline.
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, ks, ctx.Err()
	}
	if cur := s.current(); cur != ks { // someone else fetched meanwhile
		s.unlock()
		return cur.find(kid), cur, nil
	}
	now := s.now()
	if !s.lastAttempt.IsZero() && now.Sub(s.lastAttempt) < s.refetch {
		err := s.lastErr
		s.unlock()
		if ks == nil {
			if err == nil {
				err = errors.New("no keys fetched yet")
			}
			return nil, nil, err
		}
		return nil, ks, nil
	}
	// The fetch is shared work: it runs to its own timeout (fetchTimeout) whoever stops
	// waiting for it. A check that gives up (its deadline passed, or its client hung up on
	// purpose) neither records a failure of the endpoint nor leaves a rotated key unknown
	// for the refetch interval; and the fetches stay one per interval.
	done := make(chan error, 1)
	go func() {
		defer s.unlock()
		done <- s.fetchLocked(context.WithoutCancel(ctx), now)
	}()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return nil, ks, ctx.Err()
	}
	ks = s.current()
	if ks == nil {
		return nil, nil, err
	}
	return ks.find(kid), ks, nil
}

func (s *keySource) unlock() { <-s.lock }

func (ks *keySet) find(kid string) *jwk {
	if ks == nil {
		return nil
	}
	if kid != "" {
		return ks.byKid[kid]
	}
	if len(ks.all) == 1 { // a token without kid against a single-key set
		return ks.all[0]
	}
	return nil
}

// refreshIfDue fetches when the background refresh time has come; the error is the
// failed fetch's (the last good keys stay in use).
func (s *keySource) refreshIfDue(ctx context.Context) error {
	select {
	case s.lock <- struct{}{}:
	case <-ctx.Done():
		return nil // shutting down
	}
	defer s.unlock()
	now := s.now()
	if !s.nextRefresh.IsZero() && now.Before(s.nextRefresh) {
		return nil
	}
	return s.fetchLocked(ctx, now)
}

// fetchLocked fetches the JWKS (discovering its URL first when needed) and schedules the next
// refresh. On failure the last good keys stay.
func (s *keySource) fetchLocked(ctx context.Context, now time.Time) error {
	s.lastAttempt = now
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	body, maxAge, err := s.fetchJWKS(ctx)
	if err == nil {
		var keys []*jwk
		keys, err = parseJWKS(body)
		if err == nil && len(keys) == 0 {
			err = errors.New("jwks: no usable signing keys")
		}
		if err == nil {
			sum := sha256.Sum256(body)
			if sum != s.lastSum || s.current() == nil {
				s.version++
				ks := &keySet{version: s.version, byKid: make(map[string]*jwk, len(keys)), all: keys}
				for _, k := range keys {
					if k.kid != "" {
						ks.byKid[k.kid] = k
					}
				}
				s.keys.Store(ks)
				s.lastSum = sum
			}
		}
	}
	next := s.interval
	if err != nil {
		s.lastErr = fmt.Errorf("issuer %s: %w", s.issuer, err)
		// Retry sooner after a failure, but not more often than the refetch interval.
		if s.refetch < next {
			next = s.refetch
		}
	} else {
		s.lastErr = nil
		if maxAge > 0 && maxAge*9/10 < next {
			next = maxAge * 9 / 10
		}
	}
	if next < minRefresh {
		next = minRefresh
	}
	s.nextRefresh = now.Add(next)
	return s.lastErr
}

func (s *keySource) fetchJWKS(ctx context.Context) ([]byte, time.Duration, error) {
	uri := s.jwksURI
	if uri == "" {
		uri = s.discovered
	}
	if uri == "" {
		disc := strings.TrimRight(s.issuer, "/") + "/.well-known/openid-configuration"
		body, _, err := s.get(ctx, disc)
		if err != nil {
			return nil, 0, fmt.Errorf("oidc discovery: %w", err)
		}
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(body, &doc); err != nil {
			return nil, 0, fmt.Errorf("oidc discovery: %w", err)
		}
		if doc.JWKSURI == "" {
			return nil, 0, errors.New("oidc discovery: no jwks_uri")
		}
		if doc.Issuer != "" && strings.TrimRight(doc.Issuer, "/") != strings.TrimRight(s.issuer, "/") {
			return nil, 0, fmt.Errorf("oidc discovery: document is for issuer %q", doc.Issuer)
		}
		s.discovered, uri = doc.JWKSURI, doc.JWKSURI
	}
	return s.get(ctx, uri)
}

func (s *keySource) get(ctx context.Context, uri string) ([]byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody))
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("GET %s: status %d", uri, resp.StatusCode)
	}
	return body, maxAge(resp.Header.Get("Cache-Control")), nil
}

// maxAge reads max-age from a Cache-Control header (0 when absent).
func maxAge(cc string) time.Duration {
	for _, part := range strings.Split(cc, ",") {
		part = strings.TrimSpace(part)
		if v, ok := strings.CutPrefix(strings.ToLower(part), "max-age="); ok {
			if n, err := strconv.Atoi(strings.Trim(v, `"`)); err == nil && n > 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	return 0
}
