package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The REDIS_URL forms this project accepts:
//
//	redis://[user:password@]host[:6379][/db][?options]          one server
//	rediss://...                                                 one server over TLS
//	redis-sentinel://[user:password@]h1:26379,h2:26379/master[/db][?options]
//	rediss-sentinel://...                                        Sentinel, data nodes over TLS
//	redis-cluster://[user:password@]h1:7000,h2:7001[?options]   Redis Cluster
//	rediss-cluster://...                                         Redis Cluster over TLS
//	host:port                                                    same as redis://host:port
//
// go-redis's multi-host spelling is accepted too, so one REDIS_URL serves every component:
// redis+sentinel://h1:26379?addr=h2:26379&master_name=mymaster and
// redis+cluster://h1:7000?addr=h2:7001.
//
// The user and password of the URL authenticate to the data nodes (the master, the cluster
// nodes). Sentinels that require their own credentials take them from the query options
// sentinel_username and sentinel_password. Every other option is go-redis's own
// (dial_timeout=3s, read_timeout, pool_size, max_retries, db, skip_verify, ...), and an unknown
// option is an error, so a typo does not pass silently.
//
// Two options belong to this project's store, not to go-redis, and ParseRedisURL ignores them
// so every component can parse the same REDIS_URL:
//
//	prefix=NAME           the hash tag of every store key ({NAME}:...; default agw)
//	poll_interval=500ms   how often a replica checks the revision in case it missed a change
//	                      message (default 500ms)

// Store options carried in REDIS_URL's query.
const (
	urlOptPrefix       = "prefix"
	urlOptPollInterval = "poll_interval"
	urlOptSentinelUser = "sentinel_username"
	urlOptSentinelPass = "sentinel_password"
)

// DefaultRedisPrefix is the hash tag of the store's keys when REDIS_URL sets none.
const DefaultRedisPrefix = "agw"

// ParseRedisURL turns a REDIS_URL (see the forms above) into go-redis universal options:
// redis.NewUniversalClient on the result gives a single-node, Sentinel-backed or Cluster
// client as the URL says.
func ParseRedisURL(raw string) (*redis.UniversalOptions, error) {
	o, _, err := parseRedisURL(raw)
	return o, err
}

// redisStoreOptions are the store's own settings from the URL.
type redisStoreOptions struct {
	prefix string
	poll   time.Duration
}

func parseRedisURL(raw string) (*redis.UniversalOptions, redisStoreOptions, error) {
	so := redisStoreOptions{prefix: DefaultRedisPrefix, poll: 500 * time.Millisecond}
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, so, errors.New("redis url: empty")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		scheme, rest = "redis", raw // bare host:port
	}
	scheme = strings.ToLower(scheme)
	var mode, baseScheme string
	switch scheme {
	case "redis", "rediss":
		mode, baseScheme = "single", scheme
	case "redis-sentinel", "rediss-sentinel", "redis+sentinel", "rediss+sentinel":
		mode, baseScheme = "sentinel", strings.TrimSuffix(strings.TrimSuffix(scheme, "-sentinel"), "+sentinel")
	case "redis-cluster", "rediss-cluster", "redis+cluster", "rediss+cluster":
		mode, baseScheme = "cluster", strings.TrimSuffix(strings.TrimSuffix(scheme, "-cluster"), "+cluster")
	default:
		return nil, so, fmt.Errorf("redis url: unknown scheme %q (use redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster or rediss-cluster)", scheme)
	}

	// Split authority, path and query by hand: url.Parse rejects a comma-separated host list.
	authority, pathQuery := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, pathQuery = rest[:i], rest[i:]
	}
	userinfo := ""
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		userinfo, authority = authority[:i+1], authority[i+1:]
	}
	path, query, _ := strings.Cut(pathQuery, "?")
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, so, fmt.Errorf("redis url: query: %w", err)
	}

	if v := q.Get(urlOptPrefix); v != "" {
		if strings.ContainsAny(v, "{}: \t\r\n") {
			return nil, so, fmt.Errorf("redis url: prefix %q must not contain braces, colons or spaces", v)
		}
		so.prefix = v
	}
	if v := q.Get(urlOptPollInterval); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, so, fmt.Errorf("redis url: poll_interval %q must be a positive duration such as 500ms", v)
		}
		so.poll = d
	}
	sentinelUser, sentinelPass := q.Get(urlOptSentinelUser), q.Get(urlOptSentinelPass)
	// go-redis's own multi-host form: extra hosts as addr=, the master as master_name=.
	extra, masterParam := q["addr"], q.Get("master_name")
	if mode == "single" && (len(extra) > 0 || masterParam != "") {
		return nil, so, errors.New("redis url: addr= and master_name= need redis-sentinel:// or redis-cluster://")
	}
	if mode == "cluster" && masterParam != "" {
		return nil, so, errors.New("redis url: master_name= needs redis-sentinel://")
	}
	for _, k := range []string{urlOptPrefix, urlOptPollInterval, urlOptSentinelUser, urlOptSentinelPass, "addr", "master_name"} {
		q.Del(k)
	}

	hosts := []string{}
	for _, h := range append(strings.Split(authority, ","), extra...) {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			def := "6379"
			if mode == "sentinel" {
				def = "26379"
			}
			h = net.JoinHostPort(strings.Trim(h, "[]"), def)
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		return nil, so, errors.New("redis url: no host")
	}
	if mode == "single" && len(hosts) > 1 {
		return nil, so, errors.New("redis url: several hosts need redis-sentinel:// or redis-cluster://")
	}

	var masterName string
	if mode == "sentinel" {
		segs := strings.FieldsFunc(path, func(r rune) bool { return r == '/' })
		switch {
		case masterParam != "":
			masterName = masterParam // path, if any, is the db
		case len(segs) == 0:
			return nil, so, errors.New("redis url: redis-sentinel:// needs the master name as its path (redis-sentinel://host:26379/mymaster)")
		default:
			masterName, path = segs[0], "/"+strings.Join(segs[1:], "/")
		}
	}
	if mode == "cluster" && strings.Trim(path, "/") != "" {
		return nil, so, errors.New("redis url: Redis Cluster has only database 0; drop the path")
	}

	// go-redis parses userinfo, db and the remaining options of a one-host URL.
	one := baseScheme + "://" + userinfo + hosts[0] + path
	if enc := q.Encode(); enc != "" {
		one += "?" + enc
	}
	ro, err := redis.ParseURL(one)
	if err != nil {
		return nil, so, fmt.Errorf("redis url %q: %w", redactURL(raw), err)
	}
	if mode == "cluster" && ro.DB != 0 {
		return nil, so, errors.New("redis url: Redis Cluster has only database 0")
	}
	uo := universalFrom(ro)
	uo.Addrs = hosts
	switch mode {
	case "sentinel":
		uo.MasterName = masterName
		uo.SentinelUsername, uo.SentinelPassword = sentinelUser, sentinelPass
	case "cluster":
		uo.IsClusterMode = true
	}
	if (sentinelUser != "" || sentinelPass != "") && mode != "sentinel" {
		return nil, so, errors.New("redis url: sentinel_username/sentinel_password need redis-sentinel://")
	}
	return uo, so, nil
}

// universalFrom copies a single-node option set into universal options.
func universalFrom(o *redis.Options) *redis.UniversalOptions {
	return &redis.UniversalOptions{
		Addrs:                 []string{o.Addr},
		ClientName:            o.ClientName,
		DB:                    o.DB,
		Protocol:              o.Protocol,
		Username:              o.Username,
		Password:              o.Password,
		MaxRetries:            o.MaxRetries,
		MinRetryBackoff:       o.MinRetryBackoff,
		MaxRetryBackoff:       o.MaxRetryBackoff,
		DialTimeout:           o.DialTimeout,
		DialerRetries:         o.DialerRetries,
		DialerRetryTimeout:    o.DialerRetryTimeout,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled,
		PoolFIFO:              o.PoolFIFO,
		PoolSize:              o.PoolSize,
		MaxConcurrentDials:    o.MaxConcurrentDials,
		PoolTimeout:           o.PoolTimeout,
		MinIdleConns:          o.MinIdleConns,
		MaxIdleConns:          o.MaxIdleConns,
		MaxActiveConns:        o.MaxActiveConns,
		ConnMaxIdleTime:       o.ConnMaxIdleTime,
		ConnMaxLifetime:       o.ConnMaxLifetime,
		ConnMaxLifetimeJitter: o.ConnMaxLifetimeJitter,
		TLSConfig:             o.TLSConfig,
		DisableIdentity:       o.DisableIdentity,
		IdentitySuffix:        o.IdentitySuffix,
		UnstableResp3:         o.UnstableResp3,
	}
}

// redactURL hides the passwords of a URL (userinfo and *password= options) for logs and errors.
func redactURL(raw string) string {
	out := raw
	if scheme, rest, ok := strings.Cut(raw, "://"); ok {
		end := len(rest)
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			end = i
		}
		if at := strings.LastIndex(rest[:end], "@"); at >= 0 {
			if user, _, hasPass := strings.Cut(rest[:at], ":"); hasPass {
				out = scheme + "://" + user + ":xxxxx" + rest[at:]
			}
		}
	}
	for from := 0; ; {
		i := strings.Index(out[from:], "password=")
		if i < 0 {
			return out
		}
		i += from + len("password=")
		j := strings.IndexByte(out[i:], '&')
		if j < 0 {
			j = len(out) - i
		}
		out = out[:i] + "xxxxx" + out[i+j:]
		from = i
	}
}
