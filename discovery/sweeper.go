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
// later deletes instances that stayed expired that long. Each write is conditional on the
// revision read, so a heartbeat that lands in between wins.
type Sweeper struct {
	Store store.Store
	Log   *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// DeregisterAfter: delete an instance expired for this long (0 = keep it, expired).
	DeregisterAfter time.Duration
	m               *metrics
}

// SweepResult counts what one sweep did.
type SweepResult struct {
	Expired   int // instances newly marked expired
	Deleted   int // expired instances removed
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
	svcs, err := listServices(ctx, s.Store, s.log())
	if err != nil {
		return res, err
	}
	now := s.now()
	var errs []error
	for _, sv := range svcs {
		rev := sv.Revision
		switch {
		case sv.Status != model.StatusExpired && sv.Expired(now):
			sv.Status = model.StatusExpired
			sv.UpdatedAt = now.UTC()
			err := putService(ctx, s.Store, sv, rev)
			switch {
			case err == nil:
				res.Expired++
				s.log().Info("service instance expired: no heartbeat within its TTL", "id", sv.ID, "name", sv.Name,
					"last_heartbeat", sv.LastHeartbeat, "ttl", sv.TTL.String())
			case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
				res.Conflicts++
			default:
				errs = append(errs, err)
			}
		case sv.Status == model.StatusExpired && s.DeregisterAfter > 0 && sv.TTL > 0 &&
			now.Sub(sv.LastHeartbeat) > sv.TTL.D()+s.DeregisterAfter:
			_, err := store.Delete(ctx, s.Store, model.KindServices, sv.ID, rev)
			switch {
			case err == nil:
				res.Deleted++
				s.log().Info("expired service instance deregistered", "id", sv.ID, "name", sv.Name,
					"last_heartbeat", sv.LastHeartbeat)
			case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
				res.Conflicts++
			default:
				errs = append(errs, err)
			}
		}
	}
	if s.m != nil {
		s.m.expired.Add(float64(res.Expired))
		s.m.deleted.Add(float64(res.Deleted))
	}
	return res, errors.Join(errs...)
}

// listServices decodes every instance; one that does not decode is logged and skipped.
func listServices(ctx context.Context, st store.Store, log *slog.Logger) ([]*model.Service, error) {
	raws, err := st.List(ctx, model.KindServices)
	if err != nil {
		return nil, err
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
	return out, nil
}

// putService writes an instance back if it is still at revision rev.
func putService(ctx context.Context, st store.Store, sv *model.Service, rev uint64) error {
	sv.Revision = 0 // the store keeps the revision; it is not part of the stored JSON
	data, err := json.Marshal(sv)
	if err != nil {
		return fmt.Errorf("encode %s: %w", sv.ID, err)
	}
	_, err = store.Put(ctx, st, model.KindServices, sv.ID, data, rev)
	return err
}
