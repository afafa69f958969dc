package ratelimit

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// blockRedis makes the server busy (a Lua busy loop, which stops its event loop) for d, and
// returns once the server is blocked. Commands written to it meanwhile are read and run when
// the loop ends, even when their client has given up waiting and closed its connection: that
// is what a slow Redis (or a lost reply) does to a caller with a deadline. The returned
// channel is closed when the server answers again.
func blockRedis(t testing.TB, addr string, d time.Duration) <-chan struct{} {
	t.Helper()
	busy := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, ReadTimeout: -1, MaxRetries: -1})
	probe := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { busy.Close(); probe.Close() })
	// Warm both connections up.
	if err := busy.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	if err := probe.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		const spin = `local t = redis.call('TIME')
local s = t[1] * 1000000 + t[2]
while true do
  local n = redis.call('TIME')
  if n[1] * 1000000 + n[2] - s >= tonumber(ARGV[1]) then break end
end
return 1`
		if err := busy.Eval(context.Background(), spin, nil, d.Microseconds()).Err(); err != nil {
			t.Errorf("busy script: %v", err)
		}
	}()
	// Wait until a PING no longer gets through: the server is in the loop.
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		err := probe.Ping(ctx).Err()
		cancel()
		if err != nil {
			return done
		}
		if i > 200 {
			t.Fatal("redis never got busy")
		}
		time.Sleep(time.Millisecond)
	}
}

// replyDropper makes a connection lose the reply to the next write that contains marker,
// after Redis has run it: the connection reads the reply, closes and reports EOF. That is
// what a connection reset, a proxy or a failover does to a command that reached Redis.
type replyDropper struct {
	marker []byte
	armed  atomic.Bool
	fired  atomic.Int32
}

func (d *replyDropper) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &dropConn{Conn: c, d: d}, nil
}

type dropConn struct {
	net.Conn
	d    *replyDropper
	drop bool
}

func (c *dropConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.d.marker) && c.d.armed.CompareAndSwap(true, false) {
		c.drop = true
	}
	return c.Conn.Write(b)
}

func (c *dropConn) Read(b []byte) (int, error) {
	if c.drop {
		c.drop = false
		// Wait for the reply (Redis ran the commands), then lose it with the connection.
		if _, err := c.Conn.Read(b); err != nil {
			return 0, err
		}
		c.Conn.Close()
		c.d.fired.Add(1)
		return 0, io.EOF
	}
	return c.Conn.Read(b)
}

// slowWrites delays every write that contains marker by delay: a Redis (or network) that
// turns slow for one command.
type slowWrites struct {
	marker []byte
	delay  time.Duration
}

func (d *slowWrites) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &slowConn{Conn: c, d: d}, nil
}

type slowConn struct {
	net.Conn
	d *slowWrites
}

func (c *slowConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.d.marker) {
		time.Sleep(c.d.delay)
	}
	return c.Conn.Write(b)
}

// lateReplies delays the reply to the next write that contains marker by delay, after it
// arrived: the caller gets the reply, but after its deadline (a loaded Redis or network).
type lateReplies struct {
	marker []byte
	delay  time.Duration
	armed  atomic.Bool
}

func (d *lateReplies) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &lateConn{Conn: c, d: d}, nil
}

type lateConn struct {
	net.Conn
	d    *lateReplies
	late bool
}

func (c *lateConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.d.marker) && c.d.armed.CompareAndSwap(true, false) {
		c.late = true
	}
	return c.Conn.Write(b)
}

func (c *lateConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.late {
		c.late = false
		time.Sleep(c.d.delay)
	}
	return n, err
}
