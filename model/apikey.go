package model

import (
	"fmt"
	"net"
	"strings"
	"time"
)

// APIKey is an API key. The secret is returned once, on create and rotate; only its hash is
// stored (SecretHash, never shown by the API).
type APIKey struct {
	ID           string            `json:"id"` // the key's public prefix id
	Name         string            `json:"name"`
	Scopes       []string          `json:"scopes,omitempty"`
	Restrictions *KeyRestrictions  `json:"restrictions,omitempty"`
	Tenant       string            `json:"tenant,omitempty"`
	UserID       string            `json:"user_id,omitempty"`
	ExpiresAt    *time.Time        `json:"expires_at,omitempty"`
	Revoked      bool              `json:"revoked,omitempty"`
	RevokedAt    *time.Time        `json:"revoked_at,omitempty"`
	Quota        *KeyQuota         `json:"quota,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
	// SecretHash is "sha256:<hex>" of the secret part; kept in the store, stripped from responses.
	SecretHash string `json:"secret_hash,omitempty"`
	Meta
}

// KeyRestrictions limits where and when a key works.
type KeyRestrictions struct {
	AllowedIPs         []string     `json:"allowed_ips,omitempty"` // CIDRs or addresses
	AllowedRoutes      []string     `json:"allowed_routes,omitempty"`
	AllowedTimeWindows []TimeWindow `json:"allowed_time_windows,omitempty"`
}

// TimeWindow is a daily window in a time zone, optionally on some weekdays only.
type TimeWindow struct {
	Days     []string `json:"days,omitempty"` // mon..sun; empty = every day
	Start    string   `json:"start"`          // "09:00"
	End      string   `json:"end"`            // "17:30"; End < Start spans midnight
	Timezone string   `json:"timezone,omitempty"`
}

// KeyQuota limits the key's usage per day and per month (UTC calendar).
type KeyQuota struct {
	PerDay   int64 `json:"per_day,omitempty"`
	PerMonth int64 `json:"per_month,omitempty"`
}

// GetID returns the key id.
func (k *APIKey) GetID() string { return k.ID }

// SetID sets the key id.
func (k *APIKey) SetID(id string) { k.ID = id }

// Public returns a copy without the secret hash, for API responses.
func (k *APIKey) Public() *APIKey {
	c := *k
	c.SecretHash = ""
	return &c
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// Weekday parses "mon".."sun" (and full names).
func Weekday(s string) (time.Weekday, bool) {
	s = strings.ToLower(s)
	if len(s) > 3 {
		s = s[:3]
	}
	d, ok := weekdays[s]
	return d, ok
}

// ParseClock parses "HH:MM" into minutes after midnight.
func ParseClock(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("must be HH:MM")
	}
	return t.Hour()*60 + t.Minute(), nil
}

// Validate checks the key.
func (k *APIKey) Validate() FieldErrors {
	var errs FieldErrors
	checkID(&errs, k.ID)
	if strings.TrimSpace(k.Name) == "" {
		errs.Add("name", "is required")
	}
	for i, s := range k.Scopes {
		if s == "" || strings.ContainsAny(s, " \t") {
			errs.Add(fmt.Sprintf("scopes[%d]", i), "must be a non-empty word")
		}
	}
	if k.Tenant != "" && !validID(k.Tenant) {
		errs.Add("tenant", "must be a tenant id")
	}
	if r := k.Restrictions; r != nil {
		for i, ip := range r.AllowedIPs {
			if !ValidCIDROrIP(ip) {
				errs.Add(fmt.Sprintf("restrictions.allowed_ips[%d]", i), "must be an IP address or CIDR")
			}
		}
		for i, w := range r.AllowedTimeWindows {
			f := fmt.Sprintf("restrictions.allowed_time_windows[%d]", i)
			if _, err := ParseClock(w.Start); err != nil {
				errs.Add(f+".start", "%v", err)
			}
			if _, err := ParseClock(w.End); err != nil {
				errs.Add(f+".end", "%v", err)
			}
			if w.Timezone != "" {
				if _, err := time.LoadLocation(w.Timezone); err != nil {
					errs.Add(f+".timezone", "unknown time zone")
				}
			}
			for j, d := range w.Days {
				if _, ok := Weekday(d); !ok {
					errs.Add(fmt.Sprintf("%s.days[%d]", f, j), "must be mon, tue, wed, thu, fri, sat or sun")
				}
			}
		}
	}
	if q := k.Quota; q != nil && (q.PerDay < 0 || q.PerMonth < 0) {
		errs.Add("quota", "must not be negative")
	}
	return errs
}

// ValidCIDROrIP reports whether s is an IP address or a CIDR.
func ValidCIDROrIP(s string) bool {
	if net.ParseIP(s) != nil {
		return true
	}
	_, _, err := net.ParseCIDR(s)
	return err == nil
}
