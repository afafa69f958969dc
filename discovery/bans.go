package discovery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// DefaultBanGrace is how long after its expiry a WAF ban is deleted: long enough that every
// replica's clock has passed the expiry (translation and ext_authz already ignore an expired
// ban), short enough that expired bans do not pile up, and it lets bans that expire close
// together go in one revision.
const DefaultBanGrace = 10 * time.Second

// maxBanDeletesPerTxn bounds one deleting transaction (the Redis store runs it as one
// script); more expired bans than this take more than one revision.
const maxBanDeletesPerTxn = 256

// BanSweeper deletes the WAF's repeat-offender bans once they expired. A ban is an ip-rules
// object the WAF's deny tracker wrote (extauthz.StoreIPDenier, built by
// extauthz.WAFDenyRule); IsWAFBan tells one from an operator's rule, and operators' rules
// are never deleted, expired or not. The deletes are conditional on the revision read, so a
// ban renewed in between (the same client banned again: same id, new revision) stays.
type BanSweeper struct {
	Store store.Store
	Log   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Grace: delete a ban this long after it expired (default DefaultBanGrace).
	Grace time.Duration
	m     *metrics
}

// BanSweepResult counts what one sweep did.
type BanSweepResult struct {
	Deleted   int // expired bans removed
	Conflicts int // bans renewed or removed meanwhile: left alone
}

// IsWAFBan tells whether an ip-rule is a ban the WAF wrote: source "waf", deny, one address
// (no CIDR wider than it), every route, an expiry, and the id the WAF derives from that
// address (extauthz.WAFDenyRule: "waf-" and the first 8 bytes of the SHA-256 of the
// address, hex). extauthz has no exported recognizer, and this package is imported by
// services that register themselves, which must not pull in the authorization engine; a
// test keeps this predicate in step with extauthz.WAFDenyRule.
func IsWAFBan(r *model.IPRule) bool {
	if r == nil || r.Source != "waf" || r.Action != "deny" || r.ExpiresAt == nil || len(r.CIDRs) != 1 || len(r.Routes) != 0 {
		return false
	}
	a, err := netip.ParseAddr(r.CIDRs[0])
	if err != nil {
		return false
	}
	a = a.Unmap()
	if a.String() != r.CIDRs[0] {
		return false
	}
	sum := sha256.Sum256([]byte(a.String()))
	return r.ID == "waf-"+hex.EncodeToString(sum[:8])
}

func (b *BanSweeper) now() time.Time {
	if b.Now != nil {
		return b.Now()
	}
	return time.Now()
}

func (b *BanSweeper) log() *slog.Logger {
	if b.Log != nil {
		return b.Log
	}
	return slog.Default()
}

func (b *BanSweeper) grace() time.Duration {
	if b.Grace > 0 {
		return b.Grace
	}
	return DefaultBanGrace
}

// Sweep deletes every WAF ban expired for longer than the grace, as few revisions as it
// can: one transaction of conditional deletes; a delete whose ban changed meanwhile is
// dropped from it and the rest retried.
func (b *BanSweeper) Sweep(ctx context.Context) (BanSweepResult, error) {
	var res BanSweepResult
	raws, err := b.Store.List(ctx, model.KindIPRules)
	if err != nil {
		return res, err
	}
	cutoff := b.now().Add(-b.grace())
	var ops []store.Op
	for _, raw := range raws {
		var r model.IPRule
		if json.Unmarshal(raw.Data, &r) != nil {
			continue
		}
		r.ID = raw.ID
		if !IsWAFBan(&r) || !r.ExpiresAt.Before(cutoff) {
			continue
		}
		ops = append(ops, store.Op{Type: store.OpDelete, Kind: model.KindIPRules, ID: raw.ID, IfRevision: raw.Revision})
	}
	var deleted []string
	var errs []error
	for len(ops) > 0 {
		batch := ops[:min(len(ops), maxBanDeletesPerTxn)]
		_, err := b.Store.Txn(ctx, batch)
		var oe *store.OpError
		switch {
		case err == nil:
			for _, op := range batch {
				deleted = append(deleted, op.ID)
			}
			ops = ops[len(batch):]
		case errors.As(err, &oe) && oe.Index < len(batch) &&
			(errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound)):
			// Renewed (or removed) since the list: keep it, retry the others.
			res.Conflicts++
			ops = append(ops[:oe.Index:oe.Index], ops[oe.Index+1:]...)
		default:
			errs = append(errs, err)
			ops = nil
		}
	}
	res.Deleted = len(deleted)
	if res.Deleted > 0 {
		if b.m != nil {
			b.m.bansDeleted.Add(float64(res.Deleted))
		}
		sort.Strings(deleted)
		sample := deleted[:min(len(deleted), 10)]
		b.log().Info("expired WAF bans removed", "count", res.Deleted, "ids", sample, "grace", b.grace().String())
	}
	return res, errors.Join(errs...)
}
