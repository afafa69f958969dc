package main

import (
	"context"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// unaryInFlight counts unary RPCs (Check, ShouldRateLimit, health) being handled, so shutdown
// can wait for exactly those and not for the long-lived streams (ADS, access logs) that a
// client keeps open for as long as the server lets it.
//
// It is a stats handler, not a unary interceptor: an interceptor runs only once the whole
// request has arrived, and a Check whose body was still arriving (ext_authz with the request
// body, over a slow path) looked like nothing in flight and was cut. stats.Begin comes with
// the RPC's headers, before its request is read; stats.End when its handler has returned.
type unaryInFlight struct{ n atomic.Int64 }

// unaryKey marks, in an RPC's context, that Begin counted it (End carries no RPC type).
type unaryKey struct{}

// serverOptions are the options that make the server report its unary RPCs here.
func (u *unaryInFlight) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.StatsHandler(u)}
}

func (u *unaryInFlight) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, unaryKey{}, new(atomic.Bool))
}

func (u *unaryInFlight) HandleRPC(ctx context.Context, s stats.RPCStats) {
	counted, _ := ctx.Value(unaryKey{}).(*atomic.Bool)
	if counted == nil || s.IsClient() {
		return
	}
	switch s := s.(type) {
	case *stats.Begin:
		if !s.IsClientStream && !s.IsServerStream && counted.CompareAndSwap(false, true) {
			u.n.Add(1)
		}
	case *stats.End:
		if counted.CompareAndSwap(true, false) {
			u.n.Add(-1)
		}
	}
}

func (u *unaryInFlight) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

func (u *unaryInFlight) HandleConn(context.Context, stats.ConnStats) {}

// grpcStopTiming bounds stopGRPC; tests shorten nothing, the defaults are the production ones.
type grpcStopTiming struct {
	// settle is how long no unary RPC must be in flight before the remaining streams are
	// cut: it covers the GOAWAY round trip, after which grpc-go starts no new RPC on the
	// old connections (it refuses them and clients retry elsewhere transparently).
	settle time.Duration
	// max is the hard cap: a unary RPC still running after it is hung, not in flight.
	max time.Duration
}

// grpcStopAbandon is how long stopGRPC waits, after Stop, for handlers to return: Stop
// cancels their contexts, and a handler that ignores its context (a backend call without a
// deadline) is abandoned rather than allowed to hold the process past the cap.
const grpcStopAbandon = time.Second

var defaultGRPCStop = grpcStopTiming{settle: 150 * time.Millisecond, max: 10 * time.Second}

// stopGRPC stops the gRPC server fast without failing unary RPCs in flight.
//
// grpc.Server.GracefulStop alone waits for every stream to end, and an xDS client's ADS
// stream (or Envoy's access-log stream) never ends by itself: shutdown took the whole
// 20 s timeout while one was connected. So: GracefulStop first (GOAWAY, no new
// connections, unary RPCs in flight go on), then end the streams we can end cleanly
// (drains: the xDS server's context, so ADS clients get a status and reconnect), then, once
// no unary RPC has been in flight for timing.settle, Stop closes whatever stream is left.
func stopGRPC(g *grpc.Server, u *unaryInFlight, drains []func(), timing grpcStopTiming) {
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	for _, d := range drains {
		d()
	}
	deadline := time.NewTimer(timing.max)
	defer deadline.Stop()
	tick := time.NewTicker(timing.settle / 3)
	defer tick.Stop()
	var idleSince time.Time
	for {
		select {
		case <-stopped:
			return
		case <-deadline.C:
			forceStop(g, stopped)
			return
		case now := <-tick.C:
			if u.n.Load() != 0 {
				idleSince = time.Time{}
				continue
			}
			if idleSince.IsZero() {
				idleSince = now
			}
			if now.Sub(idleSince) >= timing.settle {
				forceStop(g, stopped)
				return
			}
		}
	}
}

// forceStop closes every connection and waits, at most grpcStopAbandon, for GracefulStop to
// return: it returns only once every handler has (grpc.Server waits for handlers on a
// graceful stop), and Stop has just cancelled their contexts.
func forceStop(g *grpc.Server, stopped <-chan struct{}) {
	g.Stop()
	t := time.NewTimer(grpcStopAbandon)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
	}
}
