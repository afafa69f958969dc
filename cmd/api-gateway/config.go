package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/internal/grpctls"
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
	// XDSAdvertiseAddr is how Envoy reaches this binary's gRPC port (ext_authz, rate limit,
	// access logs) from the config it is served.
	XDSAdvertiseAddr string

	GeoIPDB string

	JWTIssuer                   string
	JWTAudience                 string
	JWKSEndpoint                string
	OAuth2Issuer                string
	OAuth2AuthEndpoint          string
	OAuth2TokenEndpoint         string
	OAuth2UserinfoEndpoint      string
	OAuth2IntrospectionEndpoint string
	OAuth2ClientID              string
	OAuth2ClientSecret          string

	EnableServiceDiscovery bool
	ServiceDiscoveryType   string
	HealthProbe            bool

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
		GeoIPDB:                     os.Getenv("GEOIP_DB"),
		JWTIssuer:                   os.Getenv("JWT_ISSUER"),
		JWTAudience:                 os.Getenv("JWT_AUDIENCE"),
		JWKSEndpoint:                os.Getenv("JWKS_ENDPOINT"),
		OAuth2Issuer:                os.Getenv("OAUTH2_ISSUER"),
		OAuth2AuthEndpoint:          os.Getenv("OAUTH2_AUTH_ENDPOINT"),
		OAuth2TokenEndpoint:         os.Getenv("OAUTH2_TOKEN_ENDPOINT"),
		OAuth2UserinfoEndpoint:      os.Getenv("OAUTH2_USERINFO_ENDPOINT"),
		OAuth2IntrospectionEndpoint: os.Getenv("OAUTH2_INTROSPECTION_ENDPOINT"),
		OAuth2ClientID:              os.Getenv("OAUTH2_CLIENT_ID"),
		OAuth2ClientSecret:          os.Getenv("OAUTH2_CLIENT_SECRET"),
		ServiceDiscoveryType:        envStr("SERVICE_DISCOVERY_TYPE", "store"),
		OTLPEndpoint:                os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
		ServiceName:                 envStr("OTEL_SERVICE_NAME", "api-gateway"),
	}
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
	if o := strings.TrimSpace(os.Getenv("CORS_ORIGINS")); o != "" {
		for _, s := range strings.Split(o, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.CORSOrigins = append(c.CORSOrigins, s)
			}
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
	for name, p := range map[string]int{"PORT": c.Port, "METRICS_PORT": c.MetricsPort, "GRPC_PORT": c.GRPCPort} {
		if p < 0 || p > 65535 {
			errs = append(errs, fmt.Sprintf("%s=%d must be 0-65535", name, p))
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "warning", "error":
	default:
		errs = append(errs, fmt.Sprintf("LOG_LEVEL=%q must be debug, info, warn or error", c.LogLevel))
	}
	if _, _, err := net.SplitHostPort(c.EnvoyListenAddr); err != nil {
		errs = append(errs, fmt.Sprintf("ENVOY_LISTENER_ADDRESS=%q must be host:port", c.EnvoyListenAddr))
	}
	if _, _, err := net.SplitHostPort(c.XDSAdvertiseAddr); err != nil {
		errs = append(errs, fmt.Sprintf("XDS_ADVERTISE_ADDRESS=%q must be host:port", c.XDSAdvertiseAddr))
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("bad environment: %s", strings.Join(errs, "; "))
	}
	return c, nil
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
