package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// Sweeper marks instances that missed their TTL as expired, so the next revision leaves
// them out of EDS on every replica (the translator already skips an expired instance; the
// write is what makes every replica rebuild at that moment). With DeregisterAfter set it
// later deletes instances that stayed expired that long.
//
// An instance's last heartbeat is the newer of its stored one and its liveness entry
// (store.Liveness): heartbeats of a serving instance write only liveness, so the sweeper
// writes an instance only on a transition (serving -> expired, expired -> deleted). Each
// write is conditional on the revision read, so a heartbeat that wrote the instance in
// between (an expired one coming back) wins; and after marking an instance expired the
// sweeper reads its liveness again and undoes the mark when a heartbeat landed meanwhile
// (the heartbeat handler touches liveness and then reads the instance, so one of the two
// always sees the other). Liveness entries whose instance is gone are removed.
type Sweeper struct {
	Store store.Store
	Log   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// DeregisterAfter: delete an instance expired for this long (0 = keep it, expired).
	DeregisterAfter time.Duration
	m               *metrics
	ahead           map[string]aheadSeen // instances whose last heartbeat is ahead of the clock
}

// SweepResult counts what one sweep did.
type SweepResult struct {
	Expired   int // instances newly marked expired
	Revived   int // marks undone: a heartbeat landed while the instance was being marked
	Deleted   int // expired instances removed
	Forgotten int // liveness entries of instances that no longer exist, removed
	Conflicts int // instances changed meanwhile (a heartbeat): left for the next sweep
}

func (s *Sweeper) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Sweeper) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// Sweep looks at every instance once.
func (s *Sweeper) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	svcs, live, err := listServices(ctx, s.Store, s.log())
	if err != nil {
		return res, err
	}
	now := s.now()
	var errs []error
	present := make(map[string]bool, len(svcs))
	ahead := map[string]bool{}
	for _, sv := range svcs {
		present[sv.ID] = true
		rev := sv.Revision
		silent := false
		if sv.LastHeartbeat.After(now.Add(ClockAheadLead)) {
			silent = s.silentAhead(sv, live[sv.ID], now)
			ahead[sv.ID] = true
		}
		switch {
		case sv.Status != model.StatusExpired && (sv.Expired(now) || silent):
			prevStatus, seen := sv.Status, sv.LastHeartbeat
			sv.Status = model.StatusExpired
			sv.UpdatedAt = now.UTC()
			newRev, err := putService(ctx, s.Store, sv, rev)
			switch {
			case err == nil:
				if s.revive(ctx, sv, newRev, prevStatus, seen, now) {
					res.Revived++
					continue
				}
				res.Expired++
				s.log().Info("service instance expired: no heartbeat within its TTL", "id", sv.ID, "name", sv.Name,
					"last_heartbeat", sv.LastHeartbeat, "ttl", sv.TTL.String())
			case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
				res.Conflicts++
			default:
				errs = append(errs, err)
			}
		case sv.Status == model.StatusExpired && s.DeregisterAfter > 0 && sv.TTL > 0 &&
			expiredFor(sv, now) > s.DeregisterAfter:
			_, err := store.Delete(ctx, s.Store, model.KindServices, sv.ID, rev)
			switch {
			case err == nil:
				res.Deleted++
				delete(present, sv.ID) // its liveness entry goes with it, below
				s.log().Info("expired service instance deregistered", "id", sv.ID, "name", sv.Name,
					"last_heartbeat", sv.LastHeartbeat)
			case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
				res.Conflicts++
			default:
				errs = append(errs, err)
			}
		}
	}
	for id := range s.ahead {
		if !ahead[id] {
			delete(s.ahead, id)
		}
	}
	// Liveness was read before the instances: an entry whose instance is not in the list
	// belongs to one deleted since (by the API, a file reload, or just above).
	var gone []string
	for id := range live {
		if !present[id] {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		if err := s.Store.Forget(ctx, gone...); err != nil {
			errs = append(errs, fmt.Errorf("forget liveness of removed instances: %w", err))
		} else {
			res.Forgotten = len(gone)
		}
	}
	if s.m != nil {
		s.m.expired.Add(float64(res.Expired))
		s.m.deleted.Add(float64(res.Deleted))
	}
	return res, errors.Join(errs...)
}

// expiredFor is how long sv has been past its TTL at now (0 when it is not). Compared with
// DeregisterAfter rather than adding the two: a TTL plus SERVICE_DEREGISTER_AFTER near their
// largest values overflows to a negative duration, which would delete at once.
func expiredFor(sv *model.Service, now time.Time) time.Duration {
	since := now.Sub(sv.LastHeartbeat) // saturates instead of wrapping
	if since <= sv.TTL.D() {
		return 0
	}
	return since - sv.TTL.D()
}

// ClockAheadLead: a last heartbeat further ahead of the sweeper's clock than this was
// written by a replica whose clock runs (or ran) ahead; replicas synchronised by NTP differ by
// far less.
const ClockAheadLead = 30 * time.Second

// aheadSeen is what the sweeper saw of an instance whose last heartbeat is ahead of its clock.
type aheadSeen struct {
	rev   uint64    // the instance's revision
	live  time.Time // its liveness entry
	since time.Time // the sweeper's time when it first saw both so
}

// silentAhead tells whether sv, whose last heartbeat is further ahead of now than
// ClockAheadLead, has sent no heartbeat for its TTL by this sweeper's clock. Its TTL cannot
// be counted from a time ahead (it would keep serving until that time, however long ago its
// heartbeats stopped: a clock a year ahead, then corrected, made it immortal for a year), nor
// can the time be moved back (a sweeper whose own clock is behind would move every live
// instance's heartbeat back, out of EDS on the other replicas). So the sweeper watches it: a
// heartbeat changes its liveness entry or its revision; when neither changed for its TTL, it
// is silent and is marked expired (a heartbeat brings it back, as any expired instance). The
// watch is this sweeper's memory: a replica taking the lease over watches anew.
func (s *Sweeper) silentAhead(sv *model.Service, live, now time.Time) bool {
	if s.ahead == nil {
		s.ahead = map[string]aheadSeen{}
	}
	cur, ok := s.ahead[sv.ID]
	if !ok || cur.rev != sv.Revision || !cur.live.Equal(live) {
		s.ahead[sv.ID] = aheadSeen{rev: sv.Revision, live: live, since: now}
		return false
	}
	if sv.TTL <= 0 || now.Sub(cur.since) <= sv.TTL.D() {
		return false
	}
	s.log().Warn("service instance's last heartbeat is ahead of this clock (a replica's clock runs ahead?) and has not changed for its TTL",
		"id", sv.ID, "name", sv.Name, "last_heartbeat", sv.LastHeartbeat, "now", now)
	return true
}

// revive reads sv's liveness after the sweeper wrote it expired at rev; when a heartbeat
// newer than seen (the last heartbeat the decision used) keeps it within its TTL, it writes
// the instance back as it was. It reports whether the instance is serving again.
func (s *Sweeper) revive(ctx context.Context, sv *model.Service, rev uint64, prevStatus string, seen, now time.Time) bool {
	live, err := s.Store.LastSeen(ctx, sv.ID)
	if err != nil {
		return false // the next heartbeat sees the mark and writes the instance back
	}
	t, ok := live[sv.ID]
	if !ok || !t.After(seen) {
		return false
	}
	sv.LastHeartbeat = t
	if sv.Expired(now) {
		return false
	}
	sv.Status = prevStatus
	if _, err := putService(ctx, s.Store, sv, rev); err != nil {
		return false // changed meanwhile: by the heartbeat that brings it back, or the next sweep
	}
	s.log().Info("service instance heartbeat raced its expiry; kept", "id", sv.ID, "name", sv.Name, "last_heartbeat", t)
	return true
}

// listServices reads the liveness entries and then decodes every instance, each with its
// last heartbeat brought up to its liveness entry; one that does not decode is logged and
// skipped.
func listServices(ctx context.Context, st store.Store, log *slog.Logger) ([]*model.Service, map[string]time.Time, error) {
	live, err := st.LastSeen(ctx)
	if err != nil {
		return nil, nil, err
	}
	raws, err := st.List(ctx, model.KindServices)
	if err != nil {
		return nil, nil, err
	}
	out := make([]*model.Service, 0, len(raws))
	for _, r := range raws {
		sv := &model.Service{}
		if err := json.Unmarshal(r.Data, sv); err != nil {
			log.Warn("stored service instance does not decode; skipped", "id", r.ID, "error", err.Error())
			continue
		}
		sv.ID = r.ID
		sv.Revision = r.Revision
		out = append(out, sv)
	}
	store.ApplyLiveness(out, live)
	return out, live, nil
}

// putService writes an instance back if it is still at revision rev, and returns the new
// revision.
func putService(ctx context.Context, st store.Store, sv *model.Service, rev uint64) (uint64, error) {
	sv.Revision = 0 // the store keeps the revision; it is not part of the stored JSON
	data, err := json.Marshal(sv)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", sv.ID, err)
	}
	return store.Put(ctx, st, model.KindServices, sv.ID, data, rev)
}
