// Package store keeps the configuration model, versioned. Every write bumps one monotonic
// revision; each object records the revision of its last write (its "mod revision"), which is
// what optimistic concurrency compares. Subscribers are told of every new revision.
//
// Liveness (when a service instance last sent a heartbeat) is kept beside the model, not in
// it: a heartbeat is an event, not a configuration change, so recording one bumps no revision
// and tells no watcher. Snapshot merges it into the services it decodes.
//
// Two implementations share this interface: Bolt (embedded, default, a bbolt file under
// DATA_DIR) and Redis (several replicas). Objects are stored as JSON; the store knows kinds and
// ids, not the model's fields.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// Errors the store returns; callers match them with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("revision conflict")
	ErrClosed   = errors.New("store closed")
)

// OpType is the kind of one write in a transaction.
type OpType int

// The write operations.
const (
	OpPut    OpType = iota // create or replace
	OpCreate               // create; ErrExists when the id is taken
	OpDelete               // delete; ErrNotFound when missing
)

// Op is one write. IfRevision, when non-zero, must equal the object's current mod revision
// (ErrConflict otherwise; a missing object has revision 0, so IfRevision on a missing object
// is ErrNotFound).
type Op struct {
	Type       OpType
	Kind       model.Kind
	ID         string
	Data       []byte // JSON; the store writes it as given
	IfRevision uint64
}

// OpError says which op of a transaction failed.
type OpError struct {
	Index int
	Op    Op
	Err   error
}

func (e *OpError) Error() string {
	return string(e.Op.Kind) + "/" + e.Op.ID + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// Store is the versioned object store.
type Store interface {
	// Get returns one object.
	Get(ctx context.Context, kind model.Kind, id string) (model.RawObject, error)
	// List returns every object of a kind, sorted by id.
	List(ctx context.Context, kind model.Kind) ([]model.RawObject, error)
	// Txn applies all ops atomically at one new revision, or none of them. The returned
	// revision is the new store revision.
	Txn(ctx context.Context, ops []Op) (uint64, error)
	// Load reads every object of every kind at one consistent revision.
	Load(ctx context.Context) (uint64, map[model.Kind][]model.RawObject, error)
	// Revision returns the current store revision.
	Revision(ctx context.Context) (uint64, error)
	// Watch returns a channel that receives the latest revision after each change (values
	// may be coalesced: a slow reader sees the newest, never an old one after a new one).
	// The channel is closed when ctx ends or the store closes.
	Watch(ctx context.Context) <-chan uint64
	// Liveness is the unversioned record of instances' last heartbeats.
	Liveness
	// Ping reports whether the backing storage answers (readiness).
	Ping(ctx context.Context) error
	// Close releases the store; it waits for in-flight writes.
	Close() error
}

// Liveness records when each service instance was last seen alive. It is not part of the
// versioned model: Touch and Forget bump no revision and notify no Watch, and Load does not
// return it. Entries are keyed by instance id in their own keyspace (a bbolt bucket, one
// Redis hash), so an id cannot name an object or another store's entry. Times are kept to
// the microsecond.
type Liveness interface {
	// Touch records that id was alive at t; an entry already newer than t is kept (replicas
	// whose heartbeats arrive out of order never move it back).
	Touch(ctx context.Context, id string, t time.Time) error
	// LastSeen returns the recorded times of the given ids, or of every id when none is
	// given; an id without an entry is absent from the map.
	LastSeen(ctx context.Context, ids ...string) (map[string]time.Time, error)
	// Forget removes the entries of ids (absent ones are no error).
	Forget(ctx context.Context, ids ...string) error
}

// encodeLiveness gives the resolution liveness times are stored at: microseconds since the epoch
// are exact in a Lua number (a double), which Redis's Touch script compares.
func encodeLiveness(t time.Time) int64 { return t.UnixMicro() }

func decodeLiveness(us int64) time.Time { return time.UnixMicro(us).UTC() }

// ApplyLiveness sets each instance's LastHeartbeat to the newer of the stored one and the
// one live records (the stored one is the registration's, or the last write's).
func ApplyLiveness(svcs []*model.Service, live map[string]time.Time) {
	if len(live) == 0 {
		return
	}
	for _, sv := range svcs {
		if t, ok := live[sv.ID]; ok && t.After(sv.LastHeartbeat) {
			sv.LastHeartbeat = t
		}
	}
}

// Put is a convenience for a one-op transaction.
func Put(ctx context.Context, s Store, kind model.Kind, id string, data []byte, ifRev uint64) (uint64, error) {
	return s.Txn(ctx, []Op{{Type: OpPut, Kind: kind, ID: id, Data: data, IfRevision: ifRev}})
}

// Create is a convenience for a one-op create.
func Create(ctx context.Context, s Store, kind model.Kind, id string, data []byte) (uint64, error) {
	return s.Txn(ctx, []Op{{Type: OpCreate, Kind: kind, ID: id, Data: data}})
}

// Delete is a convenience for a one-op delete.
func Delete(ctx context.Context, s Store, kind model.Kind, id string, ifRev uint64) (uint64, error) {
	return s.Txn(ctx, []Op{{Type: OpDelete, Kind: kind, ID: id, IfRevision: ifRev}})
}

// Snapshot loads and decodes the whole model, with each service instance's LastHeartbeat
// brought up to its liveness entry: heartbeats do not write the instance, so what the
// translator decides (is the instance within its TTL?) must see them here.
func Snapshot(ctx context.Context, s Store) (*model.Snapshot, []error, error) {
	rev, raw, err := s.Load(ctx)
	if err != nil {
		return nil, nil, err
	}
	snap, errs := model.Decode(rev, raw)
	if len(snap.Services) > 0 {
		live, err := s.LastSeen(ctx)
		if err != nil {
			return nil, nil, err
		}
		ApplyLiveness(snap.Services, live)
	}
	return snap, errs, nil
}
