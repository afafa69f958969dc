package extauthz

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/ir"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
)

// ipSet is a set of addresses and prefixes, each with an optional expiry (zero: never).
// Single addresses (the common case, and every WAF ban) are a map lookup; prefixes are
// scanned (lists are short).
type ipSet struct {
	addrs    map[netip.Addr]time.Time
	prefixes []ipPrefix
}

type ipPrefix struct {
	p   netip.Prefix
	exp time.Time
}

// add parses an address or CIDR; bad entries are reported (the model validates them first).
func (s *ipSet) add(entry string, exp time.Time) error {
	entry = strings.TrimSpace(entry)
	if strings.Contains(entry, "/") {
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			// The model validates with net.ParseCIDR, which accepts what netip does not
			// ("10.0.0.0/08"): read such entries the same way rather than lose them.
			_, n, err2 := net.ParseCIDR(entry)
			if err2 != nil {
				return err
			}
			a, ok := netip.AddrFromSlice(n.IP)
			ones, _ := n.Mask.Size()
			if !ok {
				return err
			}
			p = netip.PrefixFrom(a, ones)
		}
		p = normPrefix(p)
		if p.IsSingleIP() {
			s.addAddr(p.Addr(), exp)
			return nil
		}
		s.prefixes = append(s.prefixes, ipPrefix{p: p, exp: exp})
		return nil
	}
	a, err := netip.ParseAddr(entry)
	if err != nil {
		return err
	}
	s.addAddr(normAddr(a), exp)
	return nil
}

// normAddr is the one form an address is compared in: IPv4-mapped IPv6 addresses as IPv4,
// without an IPv6 zone (netip.Prefix.Contains is false for any zoned address, and a zone
// would also make a map lookup miss, so a zone must never slip an address past a deny).
func normAddr(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// normPrefix masks p and turns an IPv4-mapped prefix (::ffff:a.b.c.d/96..128) into the
// IPv4 prefix it denotes: client addresses are compared unmapped, so ::ffff:10.0.0.0/104
// must match 10.1.2.3.
func normPrefix(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		if q, err := a.Unmap().Prefix(p.Bits() - 96); err == nil {
			return q
		}
	}
	return p
}

func (s *ipSet) addAddr(a netip.Addr, exp time.Time) {
	if s.addrs == nil {
		s.addrs = map[netip.Addr]time.Time{}
	}
	if old, ok := s.addrs[a]; ok && (old.IsZero() || (!exp.IsZero() && old.After(exp))) {
		return // keep the longer-lived entry
	}
	s.addrs[a] = exp
}

// contains reports whether a is in the set at time now (expired entries do not count).
func (s *ipSet) contains(a netip.Addr, now time.Time) bool {
	if s == nil || !a.IsValid() {
		return false
	}
	a = normAddr(a)
	if exp, ok := s.addrs[a]; ok && (exp.IsZero() || now.Before(exp)) {
		return true
	}
	for i := range s.prefixes {
		p := &s.prefixes[i]
		if p.p.Contains(a) && (p.exp.IsZero() || now.Before(p.exp)) {
			return true
		}
	}
	return false
}

// merge adds every entry of o to s (each address keeps its longer-lived expiry).
func (s *ipSet) merge(o *ipSet) {
	for a, exp := range o.addrs {
		s.addAddr(a, exp)
	}
	s.prefixes = append(s.prefixes, o.prefixes...)
}

// ipPolicy is the IP checker's table for one route: deny entries, and allow entries that,
// when present, make the route an allow list. Deny wins over allow. The global rules (those
// naming no route) are one shared policy every route points to: held once, not copied per
// route (8,000 routes and 8,000 WAF bans were 64 million set references).
type ipPolicy struct {
	global *ipPolicy
	deny   []*ipSet
	allow  []*ipSet
}

func (p *ipPolicy) check(a netip.Addr, now time.Time) (reason string, ok bool) {
	var g *ipPolicy
	if p.global != nil {
		g = p.global
	} else {
		g = &ipPolicy{}
	}
	for _, list := range [2][]*ipSet{g.deny, p.deny} {
		for _, s := range list {
			if s.contains(a, now) {
				return ReasonIPDenied, false
			}
		}
	}
	if len(p.allow) == 0 && len(g.allow) == 0 {
		return "", true
	}
	for _, list := range [2][]*ipSet{g.allow, p.allow} {
		for _, s := range list {
			if s.contains(a, now) {
				return "", true
			}
		}
	}
	return ReasonIPNotAllowed, false
}

// addMerged adds s to the policy's one set of that action (a global policy holds one deny
// and one allow set: a lookup is one map probe however many bans there are).
func (p *ipPolicy) addMerged(deny bool, s *ipSet) {
	list := &p.allow
	if deny {
		list = &p.deny
	}
	if len(*list) == 0 {
		*list = []*ipSet{{}}
	}
	(*list)[0].merge(s)
}

// ruleSet converts one ip-rule into a set, each entry with the rule's expiry (the IR holds
// only rules in force at translation; an entry is checked against the clock at each request).
// An entry that does not parse is reported and left out, but the rule stays with its other
// entries: dropping the whole rule would drop a deny, or turn an allow list into "everyone"
// (fail open).
func ruleSet(r *ir.IPRule) (*ipSet, error) {
	s := &ipSet{}
	var errs []error
	for _, c := range r.CIDRs {
		if err := s.add(c, r.Expiry); err != nil {
			errs = append(errs, fmt.Errorf("ip-rules/%s: %q: %w", r.ID, c, err))
		}
	}
	return s, errors.Join(errs...)
}

// clientAddr is the client address: Envoy's source address, or with trusted proxy hops the
// x-forwarded-for entry just left of the trusted ones (the source address when the header
// has too few entries).
func clientAddr(src netip.Addr, xff string, hops int) netip.Addr {
	if hops <= 0 || xff == "" {
		return src
	}
	// Walk from the right without allocating.
	end := len(xff)
	for skipped := 0; ; skipped++ {
		i := strings.LastIndexByte(xff[:end], ',')
		if skipped == hops {
			a, err := netip.ParseAddr(strings.TrimSpace(xff[i+1 : end]))
			if err != nil {
				return src
			}
			return normAddr(a)
		}
		if i < 0 {
			return src
		}
		end = i
	}
}

// WAFDenyRule is the ip-rules object the WAF's repeat-offender deny writes: a deny entry for
// one address with an expiry, source "waf". Its id is derived from the address, so a second
// ban of the same client replaces the first.
func WAFDenyRule(ip string, until time.Time, reason string, now time.Time) (*model.IPRule, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(ip))
	if err != nil {
		return nil, fmt.Errorf("extauthz: waf deny: %q is not an IP address", ip)
	}
	a = a.Unmap()
	sum := sha256.Sum256([]byte(a.String()))
	u := until.UTC()
	if len(reason) > 500 {
		reason = reason[:500]
	}
	return &model.IPRule{
		ID:        "waf-" + hex.EncodeToString(sum[:8]),
		Action:    "deny",
		CIDRs:     []string{a.String()},
		Comment:   reason,
		ExpiresAt: &u,
		Source:    "waf",
		Meta:      model.Meta{CreatedAt: now.UTC(), UpdatedAt: now.UTC()},
	}, nil
}

// StoreIPDenier writes WAF repeat-offender denies to the store as ip-rules objects (it
// implements waf.IPDenier). The pipeline then rebuilds the IP tables; the WAF's tracker
// denies the client locally in the meantime.
type StoreIPDenier struct {
	Store store.Store
	Now   func() time.Time
}

// DenyIP writes (or replaces) the deny rule for ip until the given time.
func (d *StoreIPDenier) DenyIP(ctx context.Context, ip string, until time.Time, reason string) error {
	now := time.Now
	if d.Now != nil {
		now = d.Now
	}
	r, err := WAFDenyRule(ip, until, reason, now())
	if err != nil {
		return err
	}
	if errs := r.Validate(); len(errs) > 0 {
		return errs
	}
	if old, err := d.Store.Get(ctx, model.KindIPRules, r.ID); err == nil {
		var prev model.IPRule
		if json.Unmarshal(old.Data, &prev) == nil && !prev.CreatedAt.IsZero() {
			r.CreatedAt = prev.CreatedAt
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = store.Put(ctx, d.Store, model.KindIPRules, r.ID, data, 0)
	return err
}
