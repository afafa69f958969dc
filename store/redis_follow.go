package store

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// follow tells this replica's watchers about revisions written by any replica: each
// published revision as it arrives, and the revision read every poll interval, which
// catches a message lost while the subscription was reconnecting. It closes ready once the
// subscription is confirmed, and r.followed when ctx ends.
func (r *Redis) follow(ctx context.Context, ready chan struct{}) {
	defer close(r.followed)
	sub := r.c.Subscribe(ctx)
	defer sub.Close()

	// Subscribe in the background: when Redis is down at this moment, the poll still runs
	// and go-redis resubscribes on reconnect.
	subscribed := make(chan error, 1)
	go func() { subscribed <- sub.Subscribe(ctx, r.channel) }()
	msgs := sub.ChannelWithSubscriptions(redis.WithChannelSize(16))

	tick := time.NewTicker(r.poll)
	defer tick.Stop()
	down := false
	readyOnce := func() {
		if ready != nil {
			close(ready)
			ready = nil
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-subscribed:
			if err != nil && ctx.Err() == nil {
				r.log.Warn("change subscription failed; relying on the revision poll", "error", err.Error())
			}
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch v := m.(type) {
			case *redis.Subscription:
				if v.Kind == "subscribe" {
					readyOnce()
				}
			case *redis.Message:
				if rev, err := strconv.ParseUint(v.Payload, 10, 64); err == nil {
					r.observe(rev)
				}
			}
		case <-tick.C:
			pctx, cancel := context.WithTimeout(ctx, max(r.poll, time.Second))
			rev, err := r.readRevision(pctx)
			cancel()
			if err != nil {
				if !down && ctx.Err() == nil {
					down = true
					r.log.Error("redis unreachable; serving the last configuration until it returns", "error", err.Error())
				}
				continue
			}
			if down {
				down = false
				r.log.Info("redis reachable again", "revision", rev)
			}
			r.observe(rev)
		}
	}
}

// observe records a revision seen in Redis and tells the watchers when it is new. A
// revision lower than one already seen means Redis lost writes (restarted without
// persistence, or failed over to a replica that missed them); it is logged, and the next
// write still gets a revision above every one seen (the transaction's floor), so watchers
// never see revisions go backwards.
func (r *Redis) observe(rev uint64) {
	r.seenMu.Lock()
	defer r.seenMu.Unlock()
	switch {
	case rev > r.seen:
		r.seen, r.lowLog = rev, false
		r.notify(rev)
	case rev < r.seen && !r.lowLog:
		r.lowLog = true
		r.log.Error("the revision in redis went backwards: redis lost acknowledged writes (enable appendonly; see deploy/README.md)",
			"redis_revision", rev, "seen_revision", r.seen)
	}
}

// seenRevision returns the highest revision this replica has seen.
func (r *Redis) seenRevision() uint64 {
	r.seenMu.Lock()
	defer r.seenMu.Unlock()
	return r.seen
}
