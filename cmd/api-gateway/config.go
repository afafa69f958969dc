package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/internal/grpctls"
	"github.com/api-gateway/api-gateway/model"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/translate"
)

// config is everything the binary reads from the environment (and serve's flags).
type config struct {
	Port        int
	MetricsPort int
	GRPCPort    int
	BindAddr    string // address the servers listen on (default all interfaces)
	// GRPCBindAddr is the address of the gRPC port alone (GRPC_BIND_ADDRESS, default
	// BindAddr): the port that serves the whole config over xDS can listen on loopback or a
	// private interface while the REST API listens wider.
	GRPCBindAddr string
	// GRPCTLS is TLS (and mutual TLS) on the gRPC port: GRPC_TLS_CERT_FILE,
	// GRPC_TLS_KEY_FILE, GRPC_TLS_CLIENT_CA_FILE, GRPC_TLS_REQUIRE_CLIENT_CERT.
	GRPCTLS     grpctls.Options
	RedisURL    string
	DataDir     string
	LogLevel    string
	AdminToken  string
	CORSOrigins []string
	ConfigFile  string

	// EnvoyListenAddr is the address of the HTTP listener served to Envoy.
	EnvoyListenAddr string
	// EnvoyUpstreamCAFile is the CA bundle Envoy verifies upstream TLS certificates against
	// when a target gives no tls_ca_pem: a path on Envoy's machine, not this binary's.
	EnvoyUpstreamCAFile string
	// XDSAdvertiseAddr is how Envoy reaches this binary's gRPC port (ext_authz, rate limit,
	// access logs) from the config it is served.
	XDSAdvertiseAddr string

	GeoIPDB string

	JWTIssuer                   string
	JWTAudience                 string
	JWKSEndpoint                string
	OAuth2IntrospectionEndpoint string
	OAuth2ClientID              string
	OAuth2ClientSecret          string

	EnableServiceDiscovery bool
	HealthProbe            bool
	// DeregisterAfter: an instance expired this long is deleted (0 keeps it).
	DeregisterAfter time.Duration

	OTLPEndpoint string
	ServiceName  string

	// RateLimitReserve: how long one instance may hold fixed-window units reserved from
	// Redis (RATE_LIMIT_RESERVE; 0, the default, charges Redis on every request).
	RateLimitReserve time.Duration
}

func envStr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func envInt(name string, def int, errs *[]string) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("%s=%q is not a number", name, v))
		return def
	}
	return n
}

func envBool(name string, def bool, errs *[]string) bool {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("%s=%q is not true or false", name, v))
		return def
	}
	return b
}

// loadConfig reads the environment. Defaults: PORT 8080, METRICS_PORT 9090, GRPC_PORT 18000,
// DATA_DIR ./data, LOG_LEVEL info; REDIS_URL empty means the embedded store.
func loadConfig() (config, error) {
	var errs []string
	c := config{
		Port:                        envInt("PORT", 8080, &errs),
		MetricsPort:                 envInt("METRICS_PORT", 9090, &errs),
		GRPCPort:                    envInt("GRPC_PORT", 18000, &errs),
		BindAddr:                    envStr("BIND_ADDRESS", ""),
		RedisURL:                    os.Getenv("REDIS_URL"),
		DataDir:                     envStr("DATA_DIR", "./data"),
		LogLevel:                    envStr("LOG_LEVEL", "info"),
		AdminToken:                  os.Getenv("ADMIN_TOKEN"),
		EnvoyListenAddr:             envStr("ENVOY_LISTENER_ADDRESS", "0.0.0.0:10000"),
		EnvoyUpstreamCAFile:         envStr("ENVOY_UPSTREAM_CA_FILE", translate.DefaultUpstreamCAFile),
		GeoIPDB:                     os.Getenv("GEOIP_DB"),
		JWTIssuer:                   os.Getenv("JWT_ISSUER"),
		JWTAudience:                 os.Getenv("JWT_AUDIENCE"),
		JWKSEndpoint:                os.Getenv("JWKS_ENDPOINT"),
		OAuth2IntrospectionEndpoint: os.Getenv("OAUTH2_INTROSPECTION_ENDPOINT"),
		OAuth2ClientID:              os.Getenv("OAUTH2_CLIENT_ID"),
		OAuth2ClientSecret:          os.Getenv("OAUTH2_CLIENT_SECRET"),
		OTLPEndpoint:                os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
		ServiceName:                 envStr("OTEL_SERVICE_NAME", "api-gateway"),
	}
	if h := c.BindAddr; h != "" && net.ParseIP(strings.Trim(h, "[]")) == nil && strings.ContainsAny(h, ":[]/ \t") {
		errs = append(errs, fmt.Sprintf("BIND_ADDRESS=%q must be an address without a port (an IP or a host name; the ports are PORT, METRICS_PORT, GRPC_PORT)", h))
	}
	c.BindAddr = strings.Trim(c.BindAddr, "[]") // "[::1]", as written in a URL
	c.GRPCBindAddr = envStr("GRPC_BIND_ADDRESS", c.BindAddr)
	if h := c.GRPCBindAddr; len(h) > 2 && h[0] == '[' && h[len(h)-1] == ']' {
		c.GRPCBindAddr = h[1 : len(h)-1] // "[::1]", as written in a URL
	}
	grpcBindOK := true
	if h := c.GRPCBindAddr; h != "" && net.ParseIP(h) == nil && strings.ContainsAny(h, ":[]/ \t") {
		errs = append(errs, fmt.Sprintf("GRPC_BIND_ADDRESS=%q must be an address without a port (an IP or a host name; the port is GRPC_PORT)", h))
		grpcBindOK = false
	}
	c.GRPCTLS = grpctls.Options{
		CertFile:     os.Getenv("GRPC_TLS_CERT_FILE"),
		KeyFile:      os.Getenv("GRPC_TLS_KEY_FILE"),
		ClientCAFile: os.Getenv("GRPC_TLS_CLIENT_CA_FILE"),
	}
	// A client CA means mutual TLS unless GRPC_TLS_REQUIRE_CLIENT_CERT=false says a client
	// certificate is optional (verified when given).
	c.GRPCTLS.RequireClientCert = envBool("GRPC_TLS_REQUIRE_CLIENT_CERT", c.GRPCTLS.ClientCAFile != "", &errs)
	if err := c.GRPCTLS.Check(); err != nil {
		errs = append(errs, "GRPC_TLS_*: "+strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	c.EnableServiceDiscovery = envBool("ENABLE_SERVICE_DISCOVERY", true, &errs)
	c.HealthProbe = envBool("HEALTH_PROBE", false, &errs)
	c.DeregisterAfter = 24 * time.Hour
	deregisterAfter := strings.TrimSpace(os.Getenv("SERVICE_DEREGISTER_AFTER"))
	if deregisterAfter != "" {
		if d, err := model.ParseDuration(deregisterAfter); err != nil || d < 0 {
			errs = append(errs, fmt.Sprintf("SERVICE_DEREGISTER_AFTER=%q must be a duration such as 24h (0 keeps expired instances)", deregisterAfter))
		} else {
			c.DeregisterAfter = d
		}
	}
	if !c.EnableServiceDiscovery {
		// The sweeper and the prober are what these two configure: without them they would
		// be accepted and do nothing.
		if c.HealthProbe {
			errs = append(errs, "HEALTH_PROBE=true needs ENABLE_SERVICE_DISCOVERY (it is false)")
		}
		if deregisterAfter != "" {
			errs = append(errs, "SERVICE_DEREGISTER_AFTER needs ENABLE_SERVICE_DISCOVERY (it is false)")
		}
	}
	errs = append(errs, retiredEnv(c.RedisURL)...)
	if c.RedisURL != "" {
		if _, err := store.ParseRedisURL(c.RedisURL); err != nil {
			errs = append(errs, fmt.Sprintf("REDIS_URL: %v", err))
		}
	}
	// A setting that only refines another is an error without it: it would do nothing.
	if c.JWTIssuer == "" {
		for _, v := range [][2]string{{"JWT_AUDIENCE", c.JWTAudience}, {"JWKS_ENDPOINT", c.JWKSEndpoint}} {
			if v[1] != "" {
				errs = append(errs, v[0]+" needs JWT_ISSUER (the default issuer it belongs to)")
			}
		}
	}
	if c.OAuth2IntrospectionEndpoint == "" {
		for _, v := range [][2]string{{"OAUTH2_CLIENT_ID", c.OAuth2ClientID}, {"OAUTH2_CLIENT_SECRET", c.OAuth2ClientSecret}} {
			if v[1] != "" {
				errs = append(errs, v[0]+" needs OAUTH2_INTROSPECTION_ENDPOINT (the credentials are the introspection call's)")
			}
		}
	}
	if o := strings.TrimSpace(os.Getenv("CORS_ORIGINS")); o != "" {
		for _, s := range strings.Split(o, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if err := checkOrigin(s); err != nil {
				errs = append(errs, fmt.Sprintf("CORS_ORIGINS: %q %v", s, err))
				continue
			}
			c.CORSOrigins = append(c.CORSOrigins, s)
		}
	}
	if v := strings.TrimSpace(os.Getenv("RATE_LIMIT_RESERVE")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Minute {
			errs = append(errs, fmt.Sprintf("RATE_LIMIT_RESERVE=%q must be a duration from 0 to 1m (e.g. 250ms)", v))
		} else {
			c.RateLimitReserve = d
		}
	}
	advertiseBind := ""
	if grpcBindOK {
		advertiseBind = c.GRPCBindAddr
	}
	c.XDSAdvertiseAddr = envStr("XDS_ADVERTISE_ADDRESS", defaultAdvertiseAddr(advertiseBind, c.GRPCPort))
	for _, p := range []struct {
		name string
		port int
	}{{"PORT", c.Port}, {"METRICS_PORT", c.MetricsPort}, {"GRPC_PORT", c.GRPCPort}} {
		if p.port < 0 || p.port > 65535 {
			errs = append(errs, fmt.Sprintf("%s=%d must be 0-65535", p.name, p.port))
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		errs = append(errs, fmt.Sprintf("LOG_LEVEL=%q must be debug, info, warn or error", c.LogLevel))
	}
	if !isHostPort(c.EnvoyListenAddr) {
		errs = append(errs, fmt.Sprintf("ENVOY_LISTENER_ADDRESS=%q must be host:port (port 1-65535)", c.EnvoyListenAddr))
	}
	// Envoy reads the file itself, relative to its own working directory for a relative path:
	// only an absolute path names one file whatever directory Envoy runs in.
	if f := c.EnvoyUpstreamCAFile; !strings.HasPrefix(f, "/") || strings.HasSuffix(f, "/") || strings.ContainsFunc(f, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		errs = append(errs, fmt.Sprintf("ENVOY_UPSTREAM_CA_FILE=%q must be the absolute path of a PEM CA bundle file on Envoy's machine", f))
	}
	// The default is checked for its form only: it carries GRPC_PORT, which may be 0 (any port).
	if _, _, err := net.SplitHostPort(c.XDSAdvertiseAddr); err != nil || (os.Getenv("XDS_ADVERTISE_ADDRESS") != "" && !isHostPort(c.XDSAdvertiseAddr)) {
		errs = append(errs, fmt.Sprintf("XDS_ADVERTISE_ADDRESS=%q must be host:port (port 1-65535)", c.XDSAdvertiseAddr))
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bad environment: %s", strings.Join(errs, "; "))
	}
	return c, nil
}

// retiredEnv refuses variables the binary no longer reads when their value asks for
// something it would not do, instead of starting quietly without it.
func retiredEnv(redisURL string) []string {
	// Service registrations are objects of the store: in Redis when REDIS_URL is set, else in
	// the embedded file. SERVICE_DISCOVERY_TYPE chose nothing beyond that; "redis" without
	// REDIS_URL used to start on the embedded store, unshared.
	switch v := strings.TrimSpace(os.Getenv("SERVICE_DISCOVERY_TYPE")); {
	case v == "", strings.EqualFold(v, "store"), strings.EqualFold(v, "redis") && redisURL != "":
		return nil
	case strings.EqualFold(v, "redis"):
		return []string{"SERVICE_DISCOVERY_TYPE=redis needs REDIS_URL: service registrations are kept in the store, " +
			"which is Redis only when REDIS_URL is set (SERVICE_DISCOVERY_TYPE is no longer read; unset it)"}
	default:
		return []string{fmt.Sprintf("SERVICE_DISCOVERY_TYPE=%q is not a discovery backend: service registrations are kept "+
			"in the store (embedded, or Redis with REDIS_URL); unset it", v)}
	}
}

// checkOrigin accepts "*" or an origin as browsers send it: scheme://host[:port], nothing
// after. Origins are compared whole, so "https://console.example/" would never match.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("must be * or scheme://host[:port] (http or https)")
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "/") {
		return errors.New("must be an origin: scheme://host[:port] with no path, query or trailing slash")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return errors.New("has a port outside 1-65535")
		}
	}
	return nil
}

// isHostPort reports whether s is host:port with a numeric port 1-65535 (the host may be empty).
func isHostPort(s string) bool {
	_, p, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

func (c config) addr(port int) string {
	return net.JoinHostPort(c.BindAddr, strconv.Itoa(port))
}

// defaultAdvertiseAddr is where Envoy reaches the gRPC port when XDS_ADVERTISE_ADDRESS is not
// set: 127.0.0.1, unless that port listens on one specific address only (GRPC_BIND_ADDRESS
// or BIND_ADDRESS): nothing answers on 127.0.0.1 then, and ext_authz (failing closed) would
// refuse every request.
func defaultAdvertiseAddr(grpcBind string, port int) string {
	host := "127.0.0.1"
	if grpcBind != "" {
		if ip := net.ParseIP(grpcBind); ip == nil || !ip.IsUnspecified() {
			host = grpcBind
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}
