package discovery

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// Registration is a registered instance kept alive by heartbeats.
type Registration struct {
	c      *Client
	info   ServiceInfo
	id     string
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	svc     model.Service
	lastErr error
	beats   int
}

// Register registers the instance and, when info.TTL > 0, heartbeats every TTL/3 until ctx
// ends or Deregister is called. A heartbeat answered 404 (the gateway removed the instance
// after it expired, say during a network partition) registers it again. Transient errors
// are retried at the next beat; Err reports the last one.
func (c *Client) Register(ctx context.Context, info ServiceInfo) (*Registration, error) {
	if info.TTL < 0 {
		return nil, errors.New("discovery: TTL must not be negative")
	}
	svc, err := c.Put(ctx, info)
	if err != nil {
		return nil, err
	}
	info.ID = svc.ID
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Registration{c: c, info: info, id: svc.ID, cancel: cancel, done: make(chan struct{}), svc: *svc}
	if info.TTL <= 0 {
		cancel()
		close(r.done)
		return r, nil
	}
	go func() {
		select {
		case <-ctx.Done():
			cancel()
		case <-hctx.Done():
		}
	}()
	go r.heartbeat(hctx)
	return r, nil
}

// ID returns the instance id the gateway stored.
func (r *Registration) ID() string { return r.id }

// Service returns the instance as the gateway last returned it.
func (r *Registration) Service() model.Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.svc
}

// Err returns the error of the last heartbeat, or nil when it succeeded.
func (r *Registration) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// Heartbeats returns how many heartbeats succeeded.
func (r *Registration) Heartbeats() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.beats
}

// Done is closed when heartbeating stops.
func (r *Registration) Done() <-chan struct{} { return r.done }

// Stop ends the heartbeats and leaves the instance registered (it expires after its TTL).
func (r *Registration) Stop() {
	r.cancel()
	<-r.done
}

// Deregister ends the heartbeats and removes the instance.
func (r *Registration) Deregister(ctx context.Context) error {
	r.Stop()
	return r.c.Deregister(ctx, r.id)
}

func (r *Registration) heartbeat(ctx context.Context) {
	defer close(r.done)
	every := r.info.TTL / 3
	if every <= 0 {
		every = time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		bctx, cancel := context.WithTimeout(ctx, every)
		err := r.c.Heartbeat(bctx, r.id)
		var svc *model.Service
		if IsNotFound(err) {
			svc, err = r.c.Put(bctx, r.info)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.lastErr = err
		if err == nil {
			r.beats++
			if svc != nil {
				r.svc = *svc
			}
		}
		r.mu.Unlock()
	}
}
