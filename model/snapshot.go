package model

import (
	"encoding/json"
	"fmt"
	"sort"
)

// Snapshot is the whole model at one store revision, decoded. It is immutable once built:
// consumers (xDS translation, ext_authz tables, rate-limit rules) read it and never write.
type Snapshot struct {
	Revision   uint64
	Routes     []*Route
	Services   []*Service
	APIKeys    []*APIKey
	RateLimits []*RateLimit
	IPRules    []*IPRule
	Policies   []*Policy
	Tenants    []*Tenant
	Settings   *Settings // never nil in a decoded snapshot
}

// New returns a new empty object of the kind.
func New(k Kind) (Object, error) {
	switch k {
	case KindRoutes:
		return &Route{}, nil
	case KindServices:
		return &Service{}, nil
	case KindAPIKeys:
		return &APIKey{}, nil
	case KindRateLimits:
		return &RateLimit{}, nil
	case KindIPRules:
		return &IPRule{}, nil
	case KindPolicies:
		return &Policy{}, nil
	case KindTenants:
		return &Tenant{}, nil
	case KindSettings:
		return &Settings{}, nil
	}
	return nil, fmt.Errorf("unknown kind %q", k)
}

// RawObject is one stored object: its JSON and the revision of its last write.
type RawObject struct {
	ID       string
	Revision uint64
	Data     []byte
}

// Decode builds a Snapshot from the raw objects of every kind. Objects that no longer decode
// (written by a newer version, say) are reported and left out.
func Decode(rev uint64, raw map[Kind][]RawObject) (*Snapshot, []error) {
	s := &Snapshot{Revision: rev}
	var errs []error
	for _, k := range Kinds {
		objs := raw[k]
		sort.Slice(objs, func(i, j int) bool { return objs[i].ID < objs[j].ID })
		for _, ro := range objs {
			o, _ := New(k)
			if err := json.Unmarshal(ro.Data, o); err != nil {
				errs = append(errs, fmt.Errorf("%s/%s: %w", k, ro.ID, err))
				continue
			}
			o.GetMeta().Revision = ro.Revision
			s.add(o)
		}
	}
	if s.Settings == nil {
		s.Settings = &Settings{ID: SettingsID}
	}
	return s, errs
}

func (s *Snapshot) add(o Object) {
	switch v := o.(type) {
	case *Route:
		s.Routes = append(s.Routes, v)
	case *Service:
		s.Services = append(s.Services, v)
	case *APIKey:
		s.APIKeys = append(s.APIKeys, v)
	case *RateLimit:
		s.RateLimits = append(s.RateLimits, v)
	case *IPRule:
		s.IPRules = append(s.IPRules, v)
	case *Policy:
		s.Policies = append(s.Policies, v)
	case *Tenant:
		s.Tenants = append(s.Tenants, v)
	case *Settings:
		if v.ID == SettingsID {
			s.Settings = v
		}
	}
}

// Route returns the route with the id, or nil.
func (s *Snapshot) Route(id string) *Route {
	i := sort.Search(len(s.Routes), func(i int) bool { return s.Routes[i].ID >= id })
	if i < len(s.Routes) && s.Routes[i].ID == id {
		return s.Routes[i]
	}
	return nil
}

// ServicesNamed returns the instances registered under a service name.
func (s *Snapshot) ServicesNamed(name string) []*Service {
	var out []*Service
	for _, sv := range s.Services {
		if sv.Name == name {
			out = append(out, sv)
		}
	}
	return out
}
