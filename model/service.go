package model

import (
	"net/url"
	"time"
)

// Service is one registered instance of a named service. Routes target services by name
// (`targets[].service`); every healthy, unexpired instance of that name is an endpoint.
// The JSON shape of the README this project grew from is accepted verbatim
// (`{"name", "host", "port", "health"}`), as is the discovery client's ServiceInfo.
type Service struct {
	ID       string            `json:"id"` // default "<name>-<host>-<port>"
	Name     string            `json:"name"`
	Host     string            `json:"host"`
	Port     int               `json:"port"`
	Protocol string            `json:"protocol,omitempty"` // http (default) | http2 | grpc
	Weight   *int              `json:"weight,omitempty"`
	Zone     string            `json:"zone,omitempty"`
	Health   string            `json:"health,omitempty"` // health URL, e.g. http://host:8080/health
	HealthCk *ServiceHealth    `json:"health_check,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// TTL: an instance that sends no heartbeat for this long leaves EDS. 0 = never expires.
	TTL Duration `json:"ttl,omitempty"`
	// LastHeartbeat is set by the server on register. Heartbeats record it beside the model
	// (store.Liveness, no revision); reads and snapshots show the newer of the two.
	LastHeartbeat time.Time `json:"last_heartbeat,omitzero"`
	// Status is healthy (default), unhealthy (set by a health probe or by the user) or
	// expired (set by the TTL sweeper; a heartbeat makes the instance healthy again).
	// Only healthy instances are endpoints.
	Status string `json:"status,omitempty"`
	Meta
}

// Service instance states.
const (
	StatusHealthy   = "healthy"
	StatusUnhealthy = "unhealthy"
	StatusExpired   = "expired"
)

// Serving reports whether the instance should receive traffic at time now.
func (s *Service) Serving(now time.Time) bool {
	return (s.Status == "" || s.Status == StatusHealthy) && !s.Expired(now)
}

// ServiceHealth describes the active health check of a service.
type ServiceHealth struct {
	HTTP     string   `json:"http,omitempty"`
	Interval Duration `json:"interval,omitempty"`
	Timeout  Duration `json:"timeout,omitempty"`
}

// GetID returns the instance id.
func (s *Service) GetID() string { return s.ID }

// SetID sets the instance id.
func (s *Service) SetID(id string) { s.ID = id }

// DefaultID derives an id from name, host and port.
func (s *Service) DefaultID() string {
	return s.Name + "-" + s.Host + "-" + itoa(s.Port)
}

// HealthURL is the URL to probe, from `health` or `health_check.http`.
func (s *Service) HealthURL() string {
	if s.Health != "" {
		return s.Health
	}
	if s.HealthCk != nil {
		return s.HealthCk.HTTP
	}
	return ""
}

// Expired reports whether the instance missed its TTL at time now.
func (s *Service) Expired(now time.Time) bool {
	return s.TTL > 0 && !s.LastHeartbeat.IsZero() && now.Sub(s.LastHeartbeat) > s.TTL.D()
}

// Validate checks the instance.
func (s *Service) Validate() FieldErrors {
	var errs FieldErrors
	checkID(&errs, s.ID)
	if s.Name == "" {
		errs.Add("name", "is required")
	} else if !validID(s.Name) {
		errs.Add("name", "must be 1-128 characters of letters, digits, '-', '_' or '.'")
	}
	if s.Host == "" {
		errs.Add("host", "is required")
	} else if !validHost(s.Host) {
		errs.Add("host", "must be an IP address or a DNS name")
	}
	if s.Port < 1 || s.Port > 65535 {
		errs.Add("port", "must be 1-65535")
	}
	switch s.Protocol {
	case "", "http", "http2", "grpc":
	default:
		errs.Add("protocol", "must be http, http2 or grpc")
	}
	if s.Weight != nil && (*s.Weight < 1 || *s.Weight > 1_000_000) {
		errs.Add("weight", "must be 1-1000000")
	}
	if u := s.HealthURL(); u != "" {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			errs.Add("health", "must be an http(s) URL")
		}
	}
	if s.HealthCk != nil && (s.HealthCk.Interval < 0 || s.HealthCk.Timeout < 0) {
		errs.Add("health_check", "durations must not be negative")
	}
	if s.TTL < 0 {
		errs.Add("ttl", "must not be negative")
	}
	switch s.Status {
	case "", StatusHealthy, StatusUnhealthy, StatusExpired:
	default:
		errs.Add("status", "must be healthy, unhealthy or expired")
	}
	return errs
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
