package extauthz

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
)

// API key secrets look like "agw_<id>_<secret>": the key's public prefix id, then 43 base62
// characters (32 random bytes, 256 bits). Only "sha256:<hex>" of the whole secret string is
// stored. A fast hash is the right choice for a secret with this much entropy: there is
// nothing to brute-force, and a slow hash would cost a millisecond on every request.
const (
	apiKeyPrefix    = "agw_"
	apiKeyRandBytes = 32
	apiKeyRandChars = 43 // ceil(256 / log2(62))
	hashPrefix      = "sha256:"
	base62          = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// NewAPIKeySecret returns a new secret for the key with prefix id `id`, and the hash to store.
// The id must not be empty; it may contain any characters of a model id (letters, digits,
// '-', '_', '.'), since ParseAPIKey splits at the last '_'.
func NewAPIKeySecret(id string) (secret string, hash string, err error) {
	if id == "" || strings.ContainsAny(id, " \t\r\n") {
		return "", "", errors.New("extauthz: an API key needs a non-empty id without spaces")
	}
	b := make([]byte, apiKeyRandBytes)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	n := new(big.Int).SetBytes(b)
	out := make([]byte, apiKeyRandChars)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := apiKeyRandChars - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62[mod.Int64()]
	}
	secret = apiKeyPrefix + id + "_" + string(out)
	return secret, HashAPIKey(secret), nil
}

// HashAPIKey returns the stored form of a secret: "sha256:<hex>".
func HashAPIKey(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hashPrefix + hex.EncodeToString(sum[:])
}

// ParseAPIKey returns the prefix id of a secret made by NewAPIKeySecret. ok is false when the
// string does not have the shape of one (no lookup is made for such strings).
func ParseAPIKey(secret string) (id string, ok bool) {
	if !strings.HasPrefix(secret, apiKeyPrefix) || len(secret) > 512 {
		return "", false
	}
	rest := secret[len(apiKeyPrefix):]
	i := strings.LastIndexByte(rest, '_')
	if i <= 0 || len(rest)-i-1 != apiKeyRandChars {
		return "", false
	}
	for j := i + 1; j < len(rest); j++ {
		if !isBase62[rest[j]] {
			return "", false
		}
	}
	return rest[:i], true
}

var isBase62 = func() (t [256]bool) {
	for i := 0; i < len(base62); i++ {
		t[base62[i]] = true
	}
	return t
}()

// parseStoredHash decodes "sha256:<hex>" into its digest.
func parseStoredHash(h string) ([32]byte, bool) {
	var d [32]byte
	if !strings.HasPrefix(h, hashPrefix) {
		return d, false
	}
	raw, err := hex.DecodeString(h[len(hashPrefix):])
	if err != nil || len(raw) != len(d) {
		return d, false
	}
	copy(d[:], raw)
	return d, true
}

// VerifyAPIKey reports whether secret matches the stored hash, in constant time.
func VerifyAPIKey(secret, storedHash string) bool {
	want, ok := parseStoredHash(storedHash)
	got := sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1 && ok
}

// KeyMinter makes API key secrets for the management API (manage.KeyMinter).
type KeyMinter struct{}

// NewSecret calls NewAPIKeySecret.
func (KeyMinter) NewSecret(id string) (secret, hash string, err error) { return NewAPIKeySecret(id) }
