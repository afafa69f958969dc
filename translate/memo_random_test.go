package translate

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// memoStore is a versioned model as the store keeps it: each object's JSON and the revision
// of its last write. snapshot decodes it as store.Snapshot does (model.Decode), so the
// objects are new on every call and carry the store's revisions.
type memoStore struct {
	rev  uint64
	objs map[model.Kind]map[string]model.RawObject
}

func (s *memoStore) put(k model.Kind, o model.Object) {
	s.rev++
	data, err := json.Marshal(o)
	if err != nil {
		panic(err)
	}
	if s.objs[k] == nil {
		s.objs[k] = map[string]model.RawObject{}
	}
	s.objs[k][o.GetID()] = model.RawObject{ID: o.GetID(), Revision: s.rev, Data: data}
}

func (s *memoStore) del(k model.Kind, id string) {
	if _, ok := s.objs[k][id]; ok {
		s.rev++
		delete(s.objs[k], id)
	}
}

func (s *memoStore) snapshot() *model.Snapshot {
	raw := map[model.Kind][]model.RawObject{}
	for k, m := range s.objs {
		for _, ro := range m {
			raw[k] = append(raw[k], ro)
		}
	}
	snap, errs := model.Decode(s.rev, raw)
	if len(errs) > 0 {
		panic(errs)
	}
	return snap
}

// TestTranslatorMemoMatchesFreshUnderRandomEdits drives a memoizing Translator through
// random sequences of writes to every kind of object (and of moves of the clock, which
// expire rules and instances without a revision), each applied as the store applies it, and
// requires every revision's IR to equal a fresh translation's. An input a route's
// translation reads but its memo key does not name shows up as a difference.
func TestTranslatorMemoMatchesFreshUnderRandomEdits(t *testing.T) {
	var reused uint64
	defer func() {
		// The comparison proves nothing if the memo is never used.
		if !t.Failed() && reused == 0 {
			t.Error("no route translation was reused")
		}
	}()
	for seed := range uint64(150) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			now := memoT0
			o := Options{ControlPlane: "127.0.0.1:18000", Now: func() time.Time { return now }}
			memo := NewTranslator(o)
			st := &memoStore{objs: map[model.Kind]map[string]model.RawObject{}}
			seedModel(st, rng)
			var log []string
			for step := range 25 {
				log = append(log, randomEdit(st, rng, &now))
				snap := st.snapshot()
				got, err := memo.Translate(snap)
				if err != nil {
					t.Fatal(err)
				}
				want, err := Translate(st.snapshot(), o)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("step %d: the memo's IR differs from a fresh translation after edits %q:\n%s", step, log, irDiff(got, want))
				}
			}
			reused += memo.Stats().Reused
		})
	}
}

var (
	randServices = []string{"svc-a", "svc-b"}
	randRoutes   = []string{"r1", "r2", "r3", "r4"}
	randRules    = []string{"ip1", "ip2", "ip3"}
	randPolicies = []string{"p1", "p2"}
	randLimits   = []string{"rl1", "rl2"}
)

func pick[T any](rng *rand.Rand, list []T) T { return list[rng.IntN(len(list))] }

func seedModel(st *memoStore, rng *rand.Rand) {
	for i := range 3 {
		st.put(model.KindServices, &model.Service{ID: fmt.Sprintf("i%d", i), Name: pick(rng, randServices),
			Host: fmt.Sprintf("10.0.0.%d", i+1), Port: 8080})
	}
	for _, id := range randRoutes[:3] {
		st.put(model.KindRoutes, randomRoute(id, rng))
	}
	if rng.IntN(2) == 0 {
		st.put(model.KindSettings, randomSettings(rng))
	}
	st.put(model.KindRateLimits, randomLimit("rl1", rng))
}

func randomRoute(id string, rng *rand.Rand) *model.Route {
	r := &model.Route{ID: id, Conditions: []model.Condition{{PathPrefix: "/" + id}},
		Targets: []model.Target{{Service: pick(rng, randServices)}}}
	if rng.IntN(2) == 0 {
		// Several targets under any load_balance: shared clusters, repeated addresses,
		// targets out of rotation.
		tr := randomTargetsRoute(rng, id)
		r.Targets, r.LoadBalance = tr.Targets, tr.LoadBalance
	}
	if rng.IntN(2) == 0 {
		f := false
		r.RequireAuth = &f
	}
	if rng.IntN(3) == 0 {
		r.Tenant = "acme"
	}
	if rng.IntN(2) == 0 {
		r.Auth = &model.RouteAuth{Methods: []string{pick(rng, []string{"jwt", "api_key"})}}
		if rng.IntN(2) == 0 {
			r.Auth.IPRules = []string{pick(rng, randRules)}
		}
		if rng.IntN(2) == 0 {
			r.Auth.Policies = []string{pick(rng, randPolicies)}
		}
		if rng.IntN(3) == 0 {
			r.Auth.ClaimsToHeaders = map[string]string{"sub": "X-Sub"}
		}
	}
	if rng.IntN(2) == 0 {
		r.RateLimit = &model.RouteRateLimit{Policies: []string{pick(rng, randLimits)}, SkipGlobal: rng.IntN(2) == 0}
	}
	if rng.IntN(4) == 0 {
		on := true
		r.WAF = &model.WAFSettings{Enabled: &on, GeoblockingEnabled: true, BlockedCountries: []string{"xx"}}
	}
	return r
}

func randomSettings(rng *rand.Rand) *model.Settings {
	s := &model.Settings{ID: model.SettingsID}
	if rng.IntN(2) == 0 {
		s.Auth = &model.AuthSettings{FailOpen: rng.IntN(2) == 0,
			IdentityHeaders: map[string]string{"user_id": pick(rng, []string{"x-who", " X-User "})}}
	}
	if rng.IntN(2) == 0 {
		s.WAF = &model.WAFSettings{GeoblockingEnabled: true, BlockedCountries: []string{pick(rng, []string{"zz", "yy"})}}
	}
	if rng.IntN(2) == 0 {
		s.RateLimit = &model.GlobalRateLimit{Policies: []string{pick(rng, randLimits)}, FailMode: pick(rng, []string{"", "closed"})}
	}
	return s
}

func randomLimit(id string, rng *rand.Rand) *model.RateLimit {
	return &model.RateLimit{ID: id, RequestsPerUnit: uint64(1 + rng.IntN(100)), TimeUnit: model.Duration(time.Second),
		By: pick(rng, []string{"", "ip", "user"})}
}

func randomRule(id string, rng *rand.Rand, now time.Time) *model.IPRule {
	r := &model.IPRule{ID: id, Action: pick(rng, []string{"allow", "deny"}),
		CIDRs: []string{pick(rng, []string{"192.0.2.0/24", "198.51.100.7", "::ffff:10.0.0.0/104"})}}
	if rng.IntN(2) == 0 {
		r.Routes = []string{pick(rng, randRoutes)}
	}
	if rng.IntN(2) == 0 {
		exp := now.Add(time.Duration(rng.IntN(4)) * time.Hour)
		r.ExpiresAt = &exp
	}
	return r
}

func randomPolicy(id string, rng *rand.Rand) *model.Policy {
	p := &model.Policy{ID: id, Rules: []model.PolicyRule{{Expression: pick(rng, []string{"true", "false"}), Action: pick(rng, []string{"allow", "deny"})}},
		DenyCountries: []string{pick(rng, []string{"aa", "bb"})}, Disabled: rng.IntN(4) == 0}
	if rng.IntN(2) == 0 {
		p.Routes = []string{pick(rng, randRoutes)}
	}
	return p
}

// randomEdit makes one write (or moves the clock) and says what it did.
func randomEdit(st *memoStore, rng *rand.Rand, now *time.Time) string {
	switch rng.IntN(16) {
	case 0:
		d := time.Duration(rng.IntN(5)) * 45 * time.Minute
		*now = now.Add(d)
		return "clock +" + d.String()
	case 1:
		id := pick(rng, randRoutes)
		st.put(model.KindRoutes, randomRoute(id, rng))
		return "put route " + id
	case 2:
		id := pick(rng, randRoutes)
		st.del(model.KindRoutes, id)
		return "delete route " + id
	case 3:
		st.put(model.KindSettings, randomSettings(rng))
		return "put settings"
	case 4:
		st.del(model.KindSettings, model.SettingsID)
		return "delete settings"
	case 5, 6:
		id := pick(rng, randRules)
		st.put(model.KindIPRules, randomRule(id, rng, *now))
		return "put ip rule " + id
	case 7:
		id := pick(rng, randRules)
		st.del(model.KindIPRules, id)
		return "delete ip rule " + id
	case 8:
		id := pick(rng, randPolicies)
		st.put(model.KindPolicies, randomPolicy(id, rng))
		return "put policy " + id
	case 9:
		id := pick(rng, randPolicies)
		st.del(model.KindPolicies, id)
		return "delete policy " + id
	case 10:
		id := pick(rng, randLimits)
		st.put(model.KindRateLimits, randomLimit(id, rng))
		return "put rate limit " + id
	case 11:
		id := pick(rng, randLimits)
		st.del(model.KindRateLimits, id)
		return "delete rate limit " + id
	case 12:
		id := fmt.Sprintf("i%d", rng.IntN(4))
		s := &model.Service{ID: id, Name: pick(rng, randServices), Host: fmt.Sprintf("10.0.1.%d", rng.IntN(3)), Port: 8080}
		if rng.IntN(3) == 0 {
			// Registered by host name: the service's clusters turn DNS, and back.
			s.Host = "inst-" + id + ".internal"
		}
		if rng.IntN(3) == 0 {
			w := 1 + rng.IntN(1_000_000)
			s.Weight = &w
		}
		if rng.IntN(2) == 0 {
			s.TTL, s.LastHeartbeat = model.Duration(time.Hour), *now
		}
		if rng.IntN(4) == 0 {
			s.Status = "unhealthy"
		}
		st.put(model.KindServices, s)
		return "put instance " + id
	case 13:
		id := fmt.Sprintf("i%d", rng.IntN(4))
		st.del(model.KindServices, id)
		return "delete instance " + id
	case 14:
		id := pick(rng, []string{"acme", "other"})
		st.put(model.KindTenants, &model.Tenant{ID: id, Disabled: rng.IntN(2) == 0})
		return "put tenant " + id
	default:
		id := pick(rng, []string{"k1", "k2"})
		st.put(model.KindAPIKeys, &model.APIKey{ID: id, Name: id, Tenant: "acme", Scopes: []string{pick(rng, []string{"a", "b"})}})
		return "put api key " + id
	}
}
