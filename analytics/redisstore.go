package analytics

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps aggregates in Redis, shared by every gateway replica. Each bucket is one
// hash "{prefix}:<res>:<unix start>" whose fields are "<encoded key>\x1e<counter>", increased
// with HINCRBY, so replicas writing the same bucket add up instead of overwriting. A sorted
// set "{prefix}:<res>:idx" indexes bucket starts for range scans and expiry. All keys share
// the hash tag {prefix}, so a Merge is one MULTI/EXEC even on Redis Cluster. Every write
// also sets the hash's TTL to its retention plus one bucket, counted from the write, so Redis
// drops abandoned buckets even if no gateway runs Expire (which removes them on time).
type RedisStore struct {
	c         redis.UniversalClient
	prefix    string
	retention Retention
}

// NewRedisStore uses c (not closed by the store). prefix defaults to "api-gateway:analytics".
func NewRedisStore(c redis.UniversalClient, prefix string, retention Retention) *RedisStore {
	if prefix == "" {
		prefix = "api-gateway:analytics"
	}
	return &RedisStore{c: c, prefix: "{" + prefix + "}", retention: retention}
}

const fieldSep = "\x1e"

func (s *RedisStore) hashKey(res Resolution, start int64) string {
	return s.prefix + ":" + res.short() + ":" + strconv.FormatInt(start, 10)
}

func (s *RedisStore) indexKey(res Resolution) string { return s.prefix + ":" + res.short() + ":idx" }

// Merge adds rows in one transaction.
func (s *RedisStore) Merge(ctx context.Context, rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	type bucket struct {
		res   Resolution
		start int64
	}
	seen := make(map[bucket]bool)
	_, err := s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i := range rows {
			r := &rows[i]
			start := r.Start.Unix()
			hk := s.hashKey(r.Res, start)
			enc := r.Key.encode() + fieldSep
			r.Stats.fields(func(name string, v uint64) {
				p.HIncrBy(ctx, hk, enc+name, int64(v))
			})
			b := bucket{r.Res, start}
			if !seen[b] {
				seen[b] = true
				p.ZAdd(ctx, s.indexKey(r.Res), redis.Z{Score: float64(start), Member: strconv.FormatInt(start, 10)})
				if ttl := s.retention.For(r.Res); ttl > 0 {
					p.Expire(ctx, hk, r.Res.Duration()+ttl)
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("analytics: redis merge: %w", err)
	}
	return nil
}

// Scan reads rows of res with start in [from, to).
func (s *RedisStore) Scan(ctx context.Context, res Resolution, from, to time.Time, fn func(Row) error) error {
	starts, err := s.c.ZRangeByScore(ctx, s.indexKey(res), &redis.ZRangeBy{
		Min: strconv.FormatInt(from.Unix(), 10), Max: "(" + strconv.FormatInt(to.Unix(), 10),
	}).Result()
	if err != nil {
		return fmt.Errorf("analytics: redis scan index: %w", err)
	}
	const batch = 256
	for len(starts) > 0 {
		n := min(batch, len(starts))
		chunk := starts[:n]
		starts = starts[n:]
		cmds := make([]*redis.MapStringStringCmd, len(chunk))
		_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, st := range chunk {
				cmds[i] = p.HGetAll(ctx, s.prefix+":"+res.short()+":"+st)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("analytics: redis scan: %w", err)
		}
		for i, st := range chunk {
			sec, err := strconv.ParseInt(st, 10, 64)
			if err != nil {
				return fmt.Errorf("analytics: bad index member %q", st)
			}
			rows := make(map[string]*Row)
			for f, v := range cmds[i].Val() {
				enc, name, ok := strings.Cut(f, fieldSep)
				if !ok {
					return fmt.Errorf("analytics: bad stored field %q", f)
				}
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					return fmt.Errorf("analytics: bad stored value %q", v)
				}
				r := rows[enc]
				if r == nil {
					k, err := decodeKey(enc)
					if err != nil {
						return err
					}
					r = &Row{Res: res, Start: time.Unix(sec, 0).UTC(), Key: k}
					rows[enc] = r
				}
				if err := r.Stats.addField(name, n); err != nil {
					return err
				}
			}
			for _, r := range rows {
				if err := fn(*r); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Expire deletes rows of res older than before.
func (s *RedisStore) Expire(ctx context.Context, res Resolution, before time.Time) error {
	max := "(" + strconv.FormatInt(before.Unix(), 10)
	starts, err := s.c.ZRangeByScore(ctx, s.indexKey(res), &redis.ZRangeBy{Min: "-inf", Max: max}).Result()
	if err != nil {
		return fmt.Errorf("analytics: redis expire: %w", err)
	}
	if len(starts) == 0 {
		return nil
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, st := range starts {
			p.Del(ctx, s.prefix+":"+res.short()+":"+st)
		}
		p.ZRemRangeByScore(ctx, s.indexKey(res), "-inf", max)
		return nil
	})
	if err != nil {
		return fmt.Errorf("analytics: redis expire: %w", err)
	}
	return nil
}
