package extauthz

import (
	"net/netip"
	"strings"
	"sync"

	"github.com/oschwald/maxminddb-golang/v2"
)

// GeoDB maps client addresses to ISO 3166-1 alpha-2 country codes with a MaxMind database
// (GeoIP2/GeoLite2 Country or City). Only country.iso_code is decoded, once per database
// record (many networks share a record), so a lookup is a tree walk and a map read.
type GeoDB struct {
	r     *maxminddb.Reader
	mu    sync.RWMutex
	byOff map[uintptr]string
}

// OpenGeoDB opens a MaxMind database file (GEOIP_DB).
func OpenGeoDB(path string) (*GeoDB, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, err
	}
	return &GeoDB{r: r, byOff: map[uintptr]string{}}, nil
}

// Country returns the country code of a ("" when unknown).
func (g *GeoDB) Country(a netip.Addr) string {
	if g == nil || !a.IsValid() {
		return ""
	}
	res := g.r.Lookup(a.Unmap())
	if res.Err() != nil || !res.Found() {
		return ""
	}
	off := res.Offset()
	g.mu.RLock()
	iso, ok := g.byOff[off]
	g.mu.RUnlock()
	if ok {
		return iso
	}
	if err := res.DecodePath(&iso, "country", "iso_code"); err != nil {
		return ""
	}
	g.mu.Lock()
	if len(g.byOff) < 1<<20 {
		g.byOff[off] = iso
	}
	g.mu.Unlock()
	return iso
}

// Close releases the database.
func (g *GeoDB) Close() error {
	if g == nil {
		return nil
	}
	return g.r.Close()
}

// geoPolicy is a route's country allow and deny lists (upper case). An address whose country
// is unknown passes deny lists and fails allow lists.
type geoPolicy struct {
	allow map[string]bool
	deny  map[string]bool
}

func (g *geoPolicy) active() bool { return g != nil && (len(g.allow) > 0 || len(g.deny) > 0) }

func (g *geoPolicy) check(country string) (reason string, ok bool) {
	if g.deny[country] && country != "" {
		return ReasonCountryDenied, false
	}
	if len(g.allow) > 0 && !g.allow[country] {
		return ReasonCountryNotAllowed, false
	}
	return "", true
}

func addCountries(m *map[string]bool, list []string) {
	for _, c := range list {
		if *m == nil {
			*m = map[string]bool{}
		}
		(*m)[strings.ToUpper(strings.TrimSpace(c))] = true
	}
}
