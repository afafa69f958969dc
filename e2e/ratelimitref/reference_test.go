// Package ratelimitref checks the gateway's rate-limit service against
// github.com/envoyproxy/ratelimit (the reference implementation) on the same configuration,
// Redis and request sequence, and benchmarks both against a server that answers OK without
// looking. It is a separate Go module so the reference's dependencies stay out of the
// gateway's go.mod.
package ratelimitref

import (
	"math/rand"
	"sync"
	"testing"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	refconfig "github.com/envoyproxy/ratelimit/src/config"
	"github.com/envoyproxy/ratelimit/src/provider"
	refredis "github.com/envoyproxy/ratelimit/src/redis"
	"github.com/envoyproxy/ratelimit/src/server"
	refservice "github.com/envoyproxy/ratelimit/src/service"
	"github.com/envoyproxy/ratelimit/src/settings"
	refstats "github.com/envoyproxy/ratelimit/src/stats"
	gostats "github.com/lyft/gostats"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc/health"
	"sigs.k8s.io/yaml"

	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/ratelimit"
)

func init() {
	// The reference logs every Redis connection at warn level; keep test output readable.
	logrus.SetLevel(logrus.ErrorLevel)
}

// fakeClock serves both implementations: ours reads Now, the reference UnixNow (seconds).
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *fakeClock) UnixNow() int64 { return c.Now().Unix() }
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

type configEvent struct{ cfg refconfig.RateLimitConfig }

func (e configEvent) GetConfig() (refconfig.RateLimitConfig, any) { return e.cfg, nil }

type staticProvider struct {
	ch chan provider.ConfigUpdateEvent
}

func (p staticProvider) ConfigUpdateEvent() <-chan provider.ConfigUpdateEvent { return p.ch }
func (p staticProvider) Stop()                                                {}

// newReference builds envoyproxy/ratelimit's service (config, Redis fixed-window cache and
// service logic) on redisAddr with the given pipelining window.
func newReference(t testing.TB, yamlConfig, redisAddr string, clock *fakeClock, window time.Duration) rlsv3.RateLimitServiceServer {
	t.Helper()
	s := settings.NewSettings()
	store := gostats.NewStore(gostats.NewNullSink(), false)
	mgr := refstats.NewStatManager(store, s)
	client := refredis.NewClientImpl(store.Scope("redis"), false, "", "tcp", "single", redisAddr, s.RedisPoolSize,
		window, 0, nil, false, nil, s.RedisTimeout, s.RedisPoolOnEmptyBehavior, "")
	t.Cleanup(func() { client.Close() })
	cache := refredis.NewFixedRateLimitCacheImpl(client, nil, clock, rand.New(rand.NewSource(1)), 0, nil,
		s.NearLimitRatio, "", mgr, false)
	cfg := refconfig.NewRateLimitConfigImpl([]refconfig.RateLimitConfigToLoad{{
		Name: "config.yaml", ConfigYaml: refconfig.ConfigFileContentToYaml("config.yaml", yamlConfig),
	}}, mgr, false)
	ch := make(chan provider.ConfigUpdateEvent, 1)
	ch <- configEvent{cfg}
	hc := server.NewHealthChecker(health.NewServer(), "ratelimit", false)
	return refservice.NewService(cache, staticProvider{ch}, mgr, hc, clock, false, false, false)
}

// newOurs loads the same YAML the way the gateway does (YAML → JSON → strict decode →
// validate → rules) into our service on the given store.
func newOurs(t testing.TB, yamlConfig string, store ratelimit.Store, clock ratelimit.Clock) *ratelimit.Service {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(yamlConfig))
	if err != nil {
		t.Fatal(err)
	}
	var rl model.RateLimit
	if fe := model.DecodeStrict(js, &rl); len(fe) > 0 {
		t.Fatalf("decode: %v", fe)
	}
	rl.ID = "ref"
	if fe := rl.Validate(); len(fe) > 0 {
		t.Fatalf("validate: %v", fe)
	}
	rules, err := ratelimit.BuildRules(&model.Snapshot{Revision: 1, RateLimits: []*model.RateLimit{&rl}, Settings: &model.Settings{ID: model.SettingsID}})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := ratelimit.New(ratelimit.Options{Store: store, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetRules(rules)
	return svc
}
