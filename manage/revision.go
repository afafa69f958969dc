package manage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// A write answers success only when its revision applied. Two steps hold that:
//
//  1. Before storing, the revision the write would make (the applied model with the object
//     put in) goes through the same whole-revision checks the pipeline runs (RevisionChecker:
//     every consumer's Prepare without the commit). A refusal answers 409 revision_refused,
//     naming each consumer's reason, and stores nothing.
//  2. After storing, the write waits for the pipeline. If the pipeline refuses the revision
//     anyway (another replica's write raced this one, or the store holds an object written
//     around the API), the write is undone when nobody changed the object since, and answers
//     409 revision_refused; when it cannot be undone (a delete, or the object moved on) it
//     answers 500 not_applied: stored, not in effect. GET /ready says not ready meanwhile.
//
// Deletes skip step 1: deleting is how an operator removes the object a refusal names.

// RevisionChecker is implemented by a Snapshotter that can run the whole-revision checks on a
// snapshot that is not stored (internal/pipeline.Pipeline.Check).
type RevisionChecker interface {
	Check(ctx context.Context, snap *model.Snapshot) error
}

// ReadyReporter is implemented by a Snapshotter that knows whether the newest revision
// applied (internal/pipeline.Pipeline.Ready): /ready's "config" check.
type ReadyReporter interface {
	Ready() error
}

// Error codes of refused and unapplied writes.
const (
	// CodeRevisionRefused: the write would make (or made, and was undone) a configuration
	// revision a consumer refuses; nothing is stored.
	CodeRevisionRefused = "revision_refused"
	// CodeNotApplied: the write is stored but its revision was refused; it is not in effect.
	CodeNotApplied = "not_applied"
	// CodeApplyPending: the write is stored but its revision had neither applied nor been
	// refused when the wait (WriteWait) ended; it is not in effect yet.
	CodeApplyPending = "apply_pending"
)

// pendingError is waitApplied's answer when the wait for a revision ended before the
// revision applied or was refused.
type pendingError struct {
	rev    uint64
	waited time.Duration
}

func (e *pendingError) Error() string {
	return fmt.Sprintf("revision %d had not applied after %s", e.rev, e.waited)
}

// notInEffect answers a stored write whose revision is not in effect: 500 not_applied when
// the revision was refused, 504 apply_pending when the wait ended first (the revision may
// still apply; the ETag names it, GET /ready tells when the gateway caught up). stored is
// what the write would have answered (nil for a delete): a 504 carries it as "object", so
// a client learns a created object's id, or a created key's secret, which is shown once.
func (a *API) notInEffect(w http.ResponseWriter, r *http.Request, kind model.Kind, id string, rev uint64, err error, stored any) {
	var pending *pendingError
	if !errors.As(err, &pending) {
		a.notApplied(w, r, kind, id, err, nil)
		return
	}
	w.Header().Set("ETag", fmt.Sprintf(`"%d"`, rev))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusGatewayTimeout)
	_ = json.NewEncoder(w).Encode(struct {
		ErrorBody
		Object any `json:"object,omitempty"`
	}{ErrorBody{Error: ErrorInfo{Code: CodeApplyPending, RequestID: RequestIDFrom(r.Context()), Message: fmt.Sprintf(
		"%s %s is stored (revision %d) but not in effect yet: %s; GET /ready reports when the gateway serves it",
		kind, quote(id), rev, pending.Error())}}, stored})
}

// checkRevision runs the whole-revision checks on the revision putting obj would make.
// Concurrent writes are checked together (see checkBatches).
func (a *API) checkRevision(ctx context.Context, kind model.Kind, obj model.Object) error {
	if _, ok := a.Model.(RevisionChecker); !ok {
		return nil
	}
	req := &checkReq{kind: kind, obj: obj, done: make(chan error, 1)}
	a.checks.mu.Lock()
	a.checks.pending = append(a.checks.pending, req)
	if !a.checks.running {
		a.checks.running = true
		go a.checkBatches()
	}
	a.checks.mu.Unlock()
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkQueue holds the writes waiting for their whole-revision check.
type checkQueue struct {
	mu      sync.Mutex
	pending []*checkReq
	running bool
}

type checkReq struct {
	kind model.Kind
	obj  model.Object
	done chan error
}

// checkBatches checks the waiting writes, as many at once as arrived together: one check of
// the applied model with all of them put in. A check costs a whole-model build, and the
// pipeline builds once per debounced batch of writes; checking every write alone made 200
// concurrent writers 3x slower. Only when a batch is refused is it split, down to each
// refused write checked alone (answerChecks), so a write is refused for its own revision,
// never for a neighbour's. Two writes of
// the same object go in different batches (the later would hide the earlier). The store
// revision each write makes is still waited for and undone if refused (settle), whatever a
// batch check missed.
func (a *API) checkBatches() {
	rc := a.Model.(RevisionChecker)
	ctx := context.Background() // one client going away must not cancel its batch's check
	for {
		a.checks.mu.Lock()
		var batch, rest []*checkReq
		seen := map[string]bool{}
		for _, req := range a.checks.pending {
			k := string(req.kind) + "/" + req.obj.GetID()
			if seen[k] {
				rest = append(rest, req)
				continue
			}
			seen[k] = true
			batch = append(batch, req)
		}
		a.checks.pending = rest
		if len(batch) == 0 {
			a.checks.running = false
			a.checks.mu.Unlock()
			return
		}
		a.checks.mu.Unlock()
		base := a.snapshot()
		answerChecks(ctx, rc, base, batch, rc.Check(ctx, withWrites(base, batch)))
	}
}

// answerChecks answers the writes of batch, whose revision together (base with all of them)
// was checked with err. A refused batch is split in halves, each checked again, down to the
// write whose own revision is refused: one bad write among n costs about 2·log2(n) checks,
// not n (checking each write alone let one client sending bad writes make every concurrent
// writer pay a whole-model build of its own).
func answerChecks(ctx context.Context, rc RevisionChecker, base *model.Snapshot, batch []*checkReq, err error) {
	if err == nil || len(batch) == 1 {
		for _, req := range batch {
			req.done <- err
		}
		return
	}
	mid := len(batch) / 2
	for _, half := range [][]*checkReq{batch[:mid], batch[mid:]} {
		answerChecks(ctx, rc, base, half, rc.Check(ctx, withWrites(base, half)))
	}
}

// withWrites returns base with the objects of reqs put in.
func withWrites(base *model.Snapshot, reqs []*checkReq) *model.Snapshot {
	snap := base
	for _, req := range reqs {
		snap = withObject(snap, req.kind, req.obj)
	}
	return snap
}

// checkFileRevision runs the whole-revision checks on the revision the declarative file's
// objects make (merged into base, the model the file is checked against), once the file
// has no other problem: what ApplyFile and `api-gateway validate` refuse a file for.
func (a *API) checkFileRevision(ctx context.Context, name string, base *model.Snapshot, objs []FileObject) FileError {
	rc, ok := a.Model.(RevisionChecker)
	if !ok {
		return nil
	}
	if err := rc.Check(ctx, mergeSnapshot(base, objs)); err != nil {
		return fileRefusal(name, err, objs)
	}
	return nil
}

// fileRefusal is a refusal of a file's revision as problems: one per reason (errors.Join puts
// one per line; a problem of several lines printed as one read as lines of no object), each
// at the line of the file's object it names as kind/id, else at the file's first line.
func fileRefusal(name string, err error, objs []FileObject) FileError {
	var out FileError
	for _, reason := range strings.Split(err.Error(), "\n") {
		if reason = strings.TrimSpace(reason); reason == "" {
			continue
		}
		p := FileProblem{File: name, Line: 1, Problem: "the configuration revision this file makes is refused, nothing was applied: " + reason}
		best := ""
		for _, fo := range objs {
			if ref := string(fo.Kind) + "/" + fo.Obj.GetID(); len(ref) > len(best) && namesRef(reason, ref) {
				best, p.Line, p.Object = ref, fo.Line, ref
			}
		}
		out = append(out, p)
	}
	return out
}

// namesRef tells whether text names ref as a whole (tenants/a, not inside tenants/ab).
func namesRef(text, ref string) bool {
	for i := 0; ; {
		j := strings.Index(text[i:], ref)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(ref)
		if (start == 0 || !isIDByte(text[start-1])) && (end == len(text) || !isIDByte(text[end])) {
			return true
		}
		i = start + 1
	}
}

func isIDByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

// refusalDetails lists each consumer's reason (errors.Join puts one per line).
func refusalDetails(err error) []model.FieldError {
	var out []model.FieldError
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, model.FieldError{Field: "", Problem: line})
		}
	}
	return out
}

// writeRefused answers 409: the configuration revision cannot apply; nothing is stored.
func writeRefused(w http.ResponseWriter, r *http.Request, err error, undone bool) {
	msg := "the configuration revision this write makes is refused, so nothing was stored: " + firstLine(err)
	if undone {
		msg = "the configuration revision this write made was refused, so the write was undone: " + firstLine(err)
	}
	WriteError(w, r, http.StatusConflict, CodeRevisionRefused, msg, refusalDetails(err))
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// settle waits for the stored write at rev to apply; when its revision is refused it undoes
// the write (restoring prev, or deleting a created object, only if the object is still at
// rev) and answers for it. true means the write applied and the caller answers; stored is
// that answer's body, sent with a 504 when the wait ends first (notInEffect).
func (a *API) settle(w http.ResponseWriter, r *http.Request, kind model.Kind, id string, rev uint64, prev model.Object, stored any) bool {
	refusal := a.waitApplied(r.Context(), rev)
	if refusal == nil || (kind == model.KindAPIKeys && keysInEffect(refusal)) {
		return true
	}
	var pending *pendingError
	if errors.As(refusal, &pending) {
		// Not refused (yet): undoing could remove a write that is about to apply.
		a.notInEffect(w, r, kind, id, rev, refusal, stored)
		return false
	}
	op := store.Op{Type: store.OpDelete, Kind: kind, ID: id, IfRevision: rev}
	if prev != nil {
		m := prev.GetMeta()
		saved := m.Revision
		m.Revision = 0 // stored objects carry their revision outside their JSON
		data, err := json.Marshal(prev)
		m.Revision = saved
		if err != nil {
			a.notApplied(w, r, kind, id, refusal, err)
			return false
		}
		op = store.Op{Type: store.OpPut, Kind: kind, ID: id, Data: data, IfRevision: rev}
	}
	// The undo is the gateway's, not the request's: a client leaving must not leave its
	// refused write stored (it would keep every later revision refused).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if _, err := a.Store.Txn(ctx, []store.Op{op}); err != nil {
		a.notApplied(w, r, kind, id, refusal, err)
		return false
	}
	a.log.WarnContext(r.Context(), "write undone: its configuration revision was refused", "kind", string(kind), "id", id,
		"revision", rev, "error", refusal.Error())
	writeRefused(w, r, refusal, true)
	return false
}

// notApplied answers 500: the write is stored but its revision was refused.
func (a *API) notApplied(w http.ResponseWriter, r *http.Request, kind model.Kind, id string, refusal, undoErr error) {
	msg := fmt.Sprintf("%s %s is stored but not in effect: the configuration revision was refused (%s)", kind, quote(id), firstLine(refusal))
	if undoErr != nil {
		a.log.ErrorContext(r.Context(), "a refused write could not be undone", "kind", string(kind), "id", id, "error", undoErr.Error())
		msg += "; undoing the write failed: " + undoErr.Error()
	}
	WriteError(w, r, http.StatusInternalServerError, CodeNotApplied, msg, refusalDetails(refusal))
}

// withObject returns base with obj put in (replacing the object of the same id), sharing
// every other object: snapshots are immutable, so only the changed kind's list is copied.
func withObject(base *model.Snapshot, kind model.Kind, obj model.Object) *model.Snapshot {
	s := *base
	switch o := obj.(type) {
	case *model.Route:
		s.Routes = putSorted(base.Routes, o)
	case *model.Service:
		s.Services = putSorted(base.Services, o)
	case *model.APIKey:
		s.APIKeys = putSorted(base.APIKeys, o)
	case *model.RateLimit:
		s.RateLimits = putSorted(base.RateLimits, o)
	case *model.IPRule:
		s.IPRules = putSorted(base.IPRules, o)
	case *model.Policy:
		s.Policies = putSorted(base.Policies, o)
	case *model.Tenant:
		s.Tenants = putSorted(base.Tenants, o)
	case *model.Settings:
		s.Settings = o
	}
	return &s
}

// putSorted returns a copy of list (sorted by id, as model.Decode leaves it) with obj in
// place of the object of its id, or inserted in order.
func putSorted[T model.Object](list []T, obj T) []T {
	id := obj.GetID()
	i := sort.Search(len(list), func(i int) bool { return list[i].GetID() >= id })
	out := make([]T, 0, len(list)+1)
	out = append(out, list[:i]...)
	out = append(out, obj)
	if i < len(list) && list[i].GetID() == id {
		i++
	}
	return append(out, list[i:]...)
}

// keysInEffect tells whether a refusal still serves the refused revision's API keys
// (pipeline.RefusedError.KeysApplied): a key write then applied, whatever object keeps the
// revision refused, and a revoked key stops working.
func keysInEffect(refusal error) bool {
	var k interface{ KeysInEffect() bool }
	return errors.As(refusal, &k) && k.KeysInEffect()
}

// isRefusal tells a refused revision from a wait that ended (timeout, client gone).
func isRefusal(err error) bool {
	return err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled)
}
