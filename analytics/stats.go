package analytics

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Other is the value a key dimension takes when the per-minute key cap is reached.
const Other = "other"

// Key is the identity of one aggregate row: route id, API key id, user id and tenant id
// (empty when the request carried none).
type Key struct {
	Route  string `json:"route"`
	APIKey string `json:"api_key"`
	User   string `json:"user"`
	Tenant string `json:"tenant"`
}

// keySep separates the dimensions of an encoded key; it is stripped from the values.
const keySep = "\x1f"

// maxDimLen bounds the length of one key dimension.
const maxDimLen = 200

func cleanDim(s string) string {
	if len(s) > maxDimLen {
		s = s[:maxDimLen]
	}
	if strings.ContainsAny(s, "\x1f\x1e\x00") {
		s = strings.Map(func(r rune) rune {
			if r == 0x1f || r == 0x1e || r == 0 {
				return -1
			}
			return r
		}, s)
	}
	return s
}

// encode writes the key as one string (dimensions separated by keySep).
func (k Key) encode() string {
	return k.Route + keySep + k.APIKey + keySep + k.User + keySep + k.Tenant
}

func decodeKey(s string) (Key, error) {
	p := strings.Split(s, keySep)
	if len(p) != 4 {
		return Key{}, fmt.Errorf("analytics: bad stored key %q", s)
	}
	return Key{Route: p[0], APIKey: p[1], User: p[2], Tenant: p[3]}, nil
}

// LatencyBoundsMs are the upper bounds (inclusive, milliseconds) of the latency histogram
// buckets kept in the aggregates; a last, unbounded bucket follows. They match the Prometheus
// buckets of api_gateway_request_duration_seconds.
var LatencyBoundsMs = [...]float64{1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000}

// NumLatencyBuckets is the number of histogram buckets including the unbounded one.
const NumLatencyBuckets = len(LatencyBoundsMs) + 1

// latencyBucket returns the index of the bucket for d.
func latencyBucket(d time.Duration) int {
	ms := float64(d) / float64(time.Millisecond)
	for i, b := range LatencyBoundsMs {
		if ms <= b {
			return i
		}
	}
	return len(LatencyBoundsMs)
}

// Stats are the additive counters of one aggregate row.
type Stats struct {
	Requests uint64
	// Status counts responses by class: index 0 is 1xx ... 4 is 5xx. Requests without a
	// response code (reset before a response) are counted in Requests only.
	Status [5]uint64
	// Latency counts requests per latency bucket (not cumulative); see LatencyBoundsMs.
	Latency       [NumLatencyBuckets]uint64
	LatencySumUs  uint64
	UpstreamCount uint64
	UpstreamSumUs uint64
	BytesIn       uint64
	BytesOut      uint64
	// Codes counts error responses (status >= 400) by exact code.
	Codes map[uint16]uint64
}

// Errors is the number of 4xx and 5xx responses.
func (s *Stats) Errors() uint64 { return s.Status[3] + s.Status[4] }

// add records one entry.
func (s *Stats) add(e *Entry) {
	s.Requests++
	if c := e.Status; c >= 100 && c < 600 {
		s.Status[c/100-1]++
		if c >= 400 {
			if s.Codes == nil {
				s.Codes = make(map[uint16]uint64, 2)
			}
			s.Codes[uint16(c)]++
		}
	}
	s.Latency[latencyBucket(e.Duration)]++
	s.LatencySumUs += uint64(e.Duration / time.Microsecond)
	if e.HasUpstream {
		s.UpstreamCount++
		s.UpstreamSumUs += uint64(e.Upstream / time.Microsecond)
	}
	s.BytesIn += e.BytesIn
	s.BytesOut += e.BytesOut
}

// Merge adds o into s.
func (s *Stats) Merge(o *Stats) {
	s.Requests += o.Requests
	for i := range s.Status {
		s.Status[i] += o.Status[i]
	}
	for i := range s.Latency {
		s.Latency[i] += o.Latency[i]
	}
	s.LatencySumUs += o.LatencySumUs
	s.UpstreamCount += o.UpstreamCount
	s.UpstreamSumUs += o.UpstreamSumUs
	s.BytesIn += o.BytesIn
	s.BytesOut += o.BytesOut
	if len(o.Codes) > 0 && s.Codes == nil {
		s.Codes = make(map[uint16]uint64, len(o.Codes))
	}
	for c, n := range o.Codes {
		s.Codes[c] += n
	}
}

// Stored field names. A row is stored as its non-zero fields; the Redis store increments
// them with HINCRBY, the bolt store keeps them as one JSON object.
const (
	fRequests = "n"
	fLatSum   = "lsum"
	fUpCount  = "un"
	fUpSum    = "usum"
	fBytesIn  = "bin"
	fBytesOut = "bout"
	pStatus   = "s" // s1..s5
	pLatency  = "l" // l0..l13
	pCode     = "c" // c404 ...
)

// fields calls fn for every non-zero counter.
func (s *Stats) fields(fn func(name string, v uint64)) {
	put := func(n string, v uint64) {
		if v != 0 {
			fn(n, v)
		}
	}
	put(fRequests, s.Requests)
	for i, v := range s.Status {
		put(pStatus+strconv.Itoa(i+1), v)
	}
	for i, v := range s.Latency {
		put(pLatency+strconv.Itoa(i), v)
	}
	put(fLatSum, s.LatencySumUs)
	put(fUpCount, s.UpstreamCount)
	put(fUpSum, s.UpstreamSumUs)
	put(fBytesIn, s.BytesIn)
	put(fBytesOut, s.BytesOut)
	for c, v := range s.Codes {
		put(pCode+strconv.Itoa(int(c)), v)
	}
}

// addField adds v to the named counter. Unknown names are an error (a newer writer).
func (s *Stats) addField(name string, v uint64) error {
	switch name {
	case fRequests:
		s.Requests += v
	case fLatSum:
		s.LatencySumUs += v
	case fUpCount:
		s.UpstreamCount += v
	case fUpSum:
		s.UpstreamSumUs += v
	case fBytesIn:
		s.BytesIn += v
	case fBytesOut:
		s.BytesOut += v
	default:
		if len(name) < 2 {
			return fmt.Errorf("analytics: unknown stored field %q", name)
		}
		n, err := strconv.Atoi(name[1:])
		if err != nil {
			return fmt.Errorf("analytics: unknown stored field %q", name)
		}
		switch name[:1] {
		case pStatus:
			if n < 1 || n > 5 {
				return fmt.Errorf("analytics: bad status field %q", name)
			}
			s.Status[n-1] += v
		case pLatency:
			if n < 0 || n >= NumLatencyBuckets {
				return fmt.Errorf("analytics: bad latency field %q", name)
			}
			s.Latency[n] += v
		case pCode:
			if n < 100 || n > math.MaxUint16 {
				return fmt.Errorf("analytics: bad code field %q", name)
			}
			if s.Codes == nil {
				s.Codes = make(map[uint16]uint64, 2)
			}
			s.Codes[uint16(n)] += v
		default:
			return fmt.Errorf("analytics: unknown stored field %q", name)
		}
	}
	return nil
}

// quantileMs estimates the q-quantile of the latency histogram in milliseconds by linear
// interpolation inside the bucket, as Prometheus' histogram_quantile does. The unbounded
// bucket reports its lower bound.
func (s *Stats) quantileMs(q float64) float64 {
	var total uint64
	for _, n := range s.Latency {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum float64
	for i, n := range s.Latency {
		prev := cum
		cum += float64(n)
		if cum >= rank && n > 0 {
			if i == len(LatencyBoundsMs) {
				return LatencyBoundsMs[i-1]
			}
			lower := 0.0
			if i > 0 {
				lower = LatencyBoundsMs[i-1]
			}
			return lower + (LatencyBoundsMs[i]-lower)*(rank-prev)/float64(n)
		}
	}
	return LatencyBoundsMs[len(LatencyBoundsMs)-1]
}
