package main

import (
	"os"
	"strings"
	"testing"
)

// Each bad value stops the start with a message naming the variable (and, for a setting
// that needs another, the one it needs); nothing bad is taken as its default.
func TestConfigRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		env  []string // name, value pairs
		want []string // in the error
	}{
		{[]string{"PORT", "70000"}, []string{"PORT="}},
		{[]string{"PORT", "-1"}, []string{"PORT="}},
		{[]string{"PORT", "http"}, []string{"PORT="}},
		{[]string{"PORT", "99999999999999999999999"}, []string{"PORT="}},
		{[]string{"METRICS_PORT", "0x2382"}, []string{"METRICS_PORT="}},
		{[]string{"GRPC_PORT", "18000 "}, []string{"GRPC_PORT="}},
		{[]string{"ENABLE_SERVICE_DISCOVERY", "yes please"}, []string{"ENABLE_SERVICE_DISCOVERY="}},
		{[]string{"HEALTH_PROBE", "maybe"}, []string{"HEALTH_PROBE="}},
		{[]string{"GRPC_TLS_REQUIRE_CLIENT_CERT", "sure"}, []string{"GRPC_TLS_REQUIRE_CLIENT_CERT="}},
		{[]string{"RATE_LIMIT_RESERVE", "2m"}, []string{"RATE_LIMIT_RESERVE="}},
		{[]string{"RATE_LIMIT_RESERVE", "-1s"}, []string{"RATE_LIMIT_RESERVE="}},
		{[]string{"RATE_LIMIT_RESERVE", "9999999999999999999h"}, []string{"RATE_LIMIT_RESERVE="}},
		{[]string{"SERVICE_DEREGISTER_AFTER", "soon"}, []string{"SERVICE_DEREGISTER_AFTER="}},
		{[]string{"SERVICE_DEREGISTER_AFTER", "-1h"}, []string{"SERVICE_DEREGISTER_AFTER="}},
		{[]string{"SERVICE_DEREGISTER_AFTER", "99999999999999999999d"}, []string{"SERVICE_DEREGISTER_AFTER="}},
		{[]string{"LOG_LEVEL", "verbose"}, []string{"LOG_LEVEL="}},
		{[]string{"ENVOY_LISTENER_ADDRESS", "10000"}, []string{"ENVOY_LISTENER_ADDRESS="}},
		{[]string{"ENVOY_LISTENER_ADDRESS", "0.0.0.0:99999"}, []string{"ENVOY_LISTENER_ADDRESS="}},
		{[]string{"ENVOY_LISTENER_ADDRESS", "0.0.0.0:http"}, []string{"ENVOY_LISTENER_ADDRESS="}},
		{[]string{"XDS_ADVERTISE_ADDRESS", "gw.internal"}, []string{"XDS_ADVERTISE_ADDRESS="}},
		{[]string{"XDS_ADVERTISE_ADDRESS", "gw.internal:0"}, []string{"XDS_ADVERTISE_ADDRESS="}},
		{[]string{"BIND_ADDRESS", "127.0.0.1:8080"}, []string{"BIND_ADDRESS="}},
		{[]string{"BIND_ADDRESS", "10.0.0.1 10.0.0.2"}, []string{"BIND_ADDRESS="}},
		{[]string{"GRPC_BIND_ADDRESS", "127.0.0.1:18000"}, []string{"GRPC_BIND_ADDRESS="}},
		{[]string{"REDIS_URL", "ftp://cache:6379"}, []string{"REDIS_URL"}},
		{[]string{"CORS_ORIGINS", "https://console.example/"}, []string{"CORS_ORIGINS", "console.example/"}},
		{[]string{"CORS_ORIGINS", "https://ok.example,console.example"}, []string{"CORS_ORIGINS", `"console.example"`}},
		{[]string{"CORS_ORIGINS", "https://console.example/admin?x=1"}, []string{"CORS_ORIGINS"}},
		{[]string{"CORS_ORIGINS", "javascript:alert(1)"}, []string{"CORS_ORIGINS"}},
		{[]string{"CORS_ORIGINS", "https://user:pw@console.example"}, []string{"CORS_ORIGINS"}},
		{[]string{"CORS_ORIGINS", "https://console.example:70000"}, []string{"CORS_ORIGINS"}},
		{[]string{"SERVICE_DISCOVERY_TYPE", "redis"}, []string{"SERVICE_DISCOVERY_TYPE=redis", "REDIS_URL"}},
		{[]string{"SERVICE_DISCOVERY_TYPE", "consul"}, []string{"SERVICE_DISCOVERY_TYPE=\"consul\""}},
		{[]string{"JWT_AUDIENCE", "api"}, []string{"JWT_AUDIENCE", "JWT_ISSUER"}},
		{[]string{"JWKS_ENDPOINT", "https://idp.example/jwks"}, []string{"JWKS_ENDPOINT", "JWT_ISSUER"}},
		{[]string{"OAUTH2_CLIENT_ID", "gw"}, []string{"OAUTH2_CLIENT_ID", "OAUTH2_INTROSPECTION_ENDPOINT"}},
		{[]string{"OAUTH2_CLIENT_SECRET", "s"}, []string{"OAUTH2_CLIENT_SECRET", "OAUTH2_INTROSPECTION_ENDPOINT"}},
		{[]string{"ENABLE_SERVICE_DISCOVERY", "false", "HEALTH_PROBE", "true"}, []string{"HEALTH_PROBE", "ENABLE_SERVICE_DISCOVERY"}},
		{[]string{"ENABLE_SERVICE_DISCOVERY", "false", "SERVICE_DEREGISTER_AFTER", "1h"}, []string{"SERVICE_DEREGISTER_AFTER", "ENABLE_SERVICE_DISCOVERY"}},
	} {
		t.Run(strings.Join(tc.env, "="), func(t *testing.T) {
			unsetEnv(t, append(readmeEnv(t), configReads(t)...)...)
			for i := 0; i+1 < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], tc.env[i+1])
			}
			_, err := loadConfig()
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q: %v", w, err)
				}
			}
		})
	}
}

// Every bad variable is named in one refusal, not only the first.
func TestConfigNamesEveryBadVariable(t *testing.T) {
	unsetEnv(t, append(readmeEnv(t), configReads(t)...)...)
	bad := map[string]string{"PORT": "x", "HEALTH_PROBE": "maybe", "RATE_LIMIT_RESERVE": "forever", "JWT_AUDIENCE": "api", "SERVICE_DISCOVERY_TYPE": "redis"}
	for k, v := range bad {
		t.Setenv(k, v)
	}
	_, err := loadConfig()
	if err == nil {
		t.Fatal("accepted")
	}
	for k := range bad {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("does not name %s: %v", k, err)
		}
	}
}

func TestConfigAcceptsGoodValues(t *testing.T) {
	for _, tc := range []struct {
		env   []string
		check func(config) bool
	}{
		{[]string{"SERVICE_DISCOVERY_TYPE", "store"}, func(config) bool { return true }},
		{[]string{"SERVICE_DISCOVERY_TYPE", "redis", "REDIS_URL", "redis://127.0.0.1:6379"}, func(c config) bool { return c.RedisURL != "" }},
		{[]string{"CORS_ORIGINS", "*"}, func(c config) bool { return len(c.CORSOrigins) == 1 }},
		{[]string{"CORS_ORIGINS", " https://console.example:8443 , http://localhost:3000,,"}, func(c config) bool {
			return len(c.CORSOrigins) == 2 && c.CORSOrigins[0] == "https://console.example:8443"
		}},
		{[]string{"BIND_ADDRESS", "[::1]"}, func(c config) bool { return c.BindAddr == "::1" && c.addr(8080) == "[::1]:8080" }},
		{[]string{"SERVICE_DEREGISTER_AFTER", "7d"}, func(config) bool { return true }},
		{[]string{"SERVICE_DEREGISTER_AFTER", "0"}, func(config) bool { return true }},
		{[]string{"GRPC_PORT", "0"}, func(c config) bool { return c.XDSAdvertiseAddr == "127.0.0.1:0" }},
		{[]string{"JWT_ISSUER", "https://idp.example", "JWT_AUDIENCE", "a,b"}, func(c config) bool { return c.JWTAudience == "a,b" }},
	} {
		t.Run(strings.Join(tc.env, "="), func(t *testing.T) {
			unsetEnv(t, append(readmeEnv(t), configReads(t)...)...)
			for i := 0; i+1 < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], tc.env[i+1])
			}
			c, err := loadConfig()
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("%+v", c)
			}
		})
	}
}

// A refused environment is exit code 2, before anything is opened or listened on.
func TestServeExitsTwoOnBadEnvironment(t *testing.T) {
	unsetEnv(t, append(readmeEnv(t), configReads(t)...)...)
	dir := t.TempDir()
	t.Setenv("DATA_DIR", dir)
	t.Setenv("SERVICE_DISCOVERY_TYPE", "redis")
	if code := runServe(nil); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
		t.Fatalf("DATA_DIR after a refused start: %v %v", ents, err)
	}
}
