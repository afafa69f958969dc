// Package model is the gateway's configuration model: the objects users manage through the
// REST management API and the declarative YAML file (routes, services, API keys, rate limits,
// IP rules, security policies, tenants and global settings).
//
// The model is plain Go types with JSON tags; the OpenAPI document is generated from these
// types by reflection (see manage), so the schema users read cannot drift from the code
// that decodes their requests. Every object has a Validate method that reports every bad field
// with its JSON path.
package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Kind names a collection of objects; it is also the REST collection name.
type Kind string

// The collections of the model.
const (
	KindRoutes     Kind = "routes"
	KindServices   Kind = "services"
	KindAPIKeys    Kind = "api-keys"
	KindRateLimits Kind = "rate-limits"
	KindIPRules    Kind = "ip-rules"
	KindPolicies   Kind = "policies"
	KindTenants    Kind = "tenants"
	KindSettings   Kind = "settings"
)

// Kinds lists every collection in a fixed order.
var Kinds = []Kind{KindRoutes, KindServices, KindAPIKeys, KindRateLimits, KindIPRules, KindPolicies, KindTenants, KindSettings}

// Meta is carried by every stored object. Revision is the store revision of the object's
// last write; it is what If-Match compares against.
type Meta struct {
	Revision  uint64    `json:"revision,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// GetMeta returns the object's metadata.
func (m *Meta) GetMeta() *Meta { return m }

// Duration is a time.Duration written as a Go duration string ("30s", "1m", "24h") in JSON
// and YAML. A bare JSON number is read as seconds.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats the duration like time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "30s" style strings, or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // as encoding/json does for its own types: null leaves the value alone
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	v, err := secondsDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// maxSeconds is the largest number of seconds a time.Duration holds (about 292 years).
const maxSeconds = float64(math.MaxInt64 / int64(time.Second))

// secondsDuration reads a JSON number of seconds. Converting a float beyond the int64 range
// to a Duration is undefined in Go (on amd64 it wraps to the most negative value), so
// 1e300 must be refused, not stored as -292 years.
func secondsDuration(n string) (time.Duration, error) {
	f, err := strconv.ParseFloat(n, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("duration must be a string such as \"30s\" or a number of seconds")
	}
	if math.Abs(f) > maxSeconds {
		return 0, fmt.Errorf("%s seconds is out of range (at most %d, about 292 years)", n, int64(maxSeconds))
	}
	return time.Duration(f * float64(time.Second)), nil
}

// maxDays is the largest whole number of days a time.Duration holds.
const maxDays = int64(math.MaxInt64 / int64(24*time.Hour))

// durationDigits is the shape of a well-formed duration string, to tell an overflow
// from a typo in time.ParseDuration's single error.
// Every unit needs a number before it ("12", "1.5", ".5", "1."): "s" or ".s" is a typo.
var durationDigits = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// ParseDuration parses a Go duration string and also accepts day suffixes ("7d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if strings.HasSuffix(s, "d") && !strings.ContainsAny(s[:len(s)-1], "hmsuµn") {
		n, err := strconv.ParseInt(strings.TrimSuffix(s, "d"), 10, 64)
		if err == nil {
			// n days times 24h overflows int64 silently beyond about 106,751 days:
			// "99999999d" used to be stored as 1923246h.
			if n > maxDays || n < -maxDays {
				return 0, fmt.Errorf("%q is out of range (at most %dd, about 292 years)", s, maxDays)
			}
			return time.Duration(n) * 24 * time.Hour, nil
		}
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, fmt.Errorf("%q is out of range (at most %dd, about 292 years)", s, maxDays)
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if strings.Contains(err.Error(), "invalid duration") && durationDigits.MatchString(s) {
			// time.ParseDuration says only "invalid duration" for an overflow.
			return 0, fmt.Errorf("%q is out of range (at most about 2562047h, 292 years)", s)
		}
		return 0, fmt.Errorf("%q is not a duration (use forms like \"500ms\", \"30s\", \"1m\", \"24h\")", s)
	}
	return v, nil
}

// FieldError is one problem with one field, named by its JSON path ("targets[0].port").
type FieldError struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

// FieldErrors collects every problem found in an object.
type FieldErrors []FieldError

// Error joins the problems into one line.
func (e FieldErrors) Error() string {
	parts := make([]string, len(e))
	for i, fe := range e {
		parts[i] = fe.Field + ": " + fe.Problem
	}
	return strings.Join(parts, "; ")
}

// Add records a problem with a field.
func (e *FieldErrors) Add(field, format string, args ...any) {
	*e = append(*e, FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

// Nest records every problem of a nested object under prefix.
func (e *FieldErrors) Nest(prefix string, inner FieldErrors) {
	for _, fe := range inner {
		f := prefix
		if fe.Field != "" {
			if strings.HasPrefix(fe.Field, "[") {
				f += fe.Field
			} else {
				f += "." + fe.Field
			}
		}
		*e = append(*e, FieldError{Field: f, Problem: fe.Problem})
	}
}

// Err returns nil when there are no problems, so callers can `return errs.Err()`.
func (e FieldErrors) Err() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// Object is implemented by every top-level model object.
type Object interface {
	GetID() string
	SetID(string)
	GetMeta() *Meta
	Validate() FieldErrors
}

// validID reports whether s can be used as an object id (it appears in URLs and xDS names).
func validID(s string) bool {
	// "." and ".." are dot-segments: clients and routers remove them from a URL path
	// (RFC 3986 §5.2.4), so /api/v1/management/routes/.. never reaches that object and it
	// could be neither read nor deleted through the API.
	if s == "" || len(s) > 128 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// checkID validates an object id field.
func checkID(errs *FieldErrors, id string) {
	if id != "" && !validID(id) {
		errs.Add("id", "must be 1-128 characters of letters, digits, '-', '_' or '.', and not '.' or '..'")
	}
}
