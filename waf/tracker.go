package waf

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// IPDenier turns a repeat offender into a deny entry (the gateway writes an ip-rules deny
// object with an expiry, source "waf", visible and removable through the ip-rules API).
type IPDenier interface {
	DenyIP(ctx context.Context, ip string, until time.Time, reason string) error
}

// Clock returns the current time; tests inject a fake.
type Clock func() time.Time

// maxTrackedIPs bounds the offender table; past it, stale entries are pruned.
const maxTrackedIPs = 100_000

// denyTimeout bounds the IPDenier call made on the request path.
const denyTimeout = 2 * time.Second

// Tracker counts WAF detections per client address and denies a client that trips the
// WAF Threshold times within Window, for BanDuration. It keeps the ban locally too, so
// the client is denied at once, before the ip-rules entry propagates.
type Tracker struct {
	denier IPDenier
	now    Clock
	logger *slog.Logger

	mu        sync.Mutex
	offenders map[string][]time.Time // recent detections, oldest first
	bans      map[string]time.Time   // ip -> ban end
}

// NewTracker returns a tracker. clock may be nil (time.Now); denier may be nil (local
// bans only).
func NewTracker(denier IPDenier, clock Clock, logger *slog.Logger) *Tracker {
	if clock == nil {
		clock = time.Now
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Tracker{denier: denier, now: clock, logger: logger,
		offenders: map[string][]time.Time{}, bans: map[string]time.Time{}}
}

// Record notes one detection for ip under policy p. When the detection makes the client a
// repeat offender it is banned until the returned time and the IPDenier is called
// (outside the tracker's lock); banned reports that this call started the ban.
func (t *Tracker) Record(ctx context.Context, ip string, p OffenderPolicy, reason string) (banned bool, until time.Time, err error) {
	if !p.Enabled || p.Threshold <= 0 {
		return false, time.Time{}, nil
	}
	now := t.now()
	t.mu.Lock()
	if end, ok := t.bans[ip]; ok {
		if now.Before(end) {
			t.mu.Unlock()
			return false, end, nil
		}
		delete(t.bans, ip)
	}
	hits := t.offenders[ip]
	cut := 0
	for cut < len(hits) && now.Sub(hits[cut]) >= p.Window {
		cut++
	}
	hits = append(hits[cut:], now)
	if len(hits) > p.Threshold {
		hits = hits[len(hits)-p.Threshold:]
	}
	if len(hits) >= p.Threshold {
		delete(t.offenders, ip)
		until = now.Add(p.BanDuration)
		t.bans[ip] = until
		banned = true
	} else {
		t.offenders[ip] = hits
	}
	if len(t.offenders)+len(t.bans) > maxTrackedIPs {
		t.pruneLocked(now, p.Window)
	}
	t.mu.Unlock()

	if !banned {
		return false, time.Time{}, nil
	}
	t.logger.Warn("waf: denying repeat offender", "client_ip", ip, "until", until, "reason", reason)
	if t.denier != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), denyTimeout)
		defer cancel()
		err = t.denier.DenyIP(dctx, ip, until, reason)
	}
	return true, until, err
}

// Banned reports whether ip is banned now and until when.
func (t *Tracker) Banned(ip string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	end, ok := t.bans[ip]
	if !ok {
		return time.Time{}, false
	}
	if !t.now().Before(end) {
		delete(t.bans, ip)
		return time.Time{}, false
	}
	return end, true
}

// Release lifts a ban early (the operator deleted the ip-rules entry) and forgets the
// client's detections.
func (t *Tracker) Release(ip string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.bans, ip)
	delete(t.offenders, ip)
}

// pruneLocked drops ended bans and offenders with no detection within window.
func (t *Tracker) pruneLocked(now time.Time, window time.Duration) {
	for ip, end := range t.bans {
		if !now.Before(end) {
			delete(t.bans, ip)
		}
	}
	for ip, hits := range t.offenders {
		if len(hits) == 0 || now.Sub(hits[len(hits)-1]) >= window {
			delete(t.offenders, ip)
		}
	}
}
