// Package discovery is service registration for the api-gateway, both ends of it.
//
// The client (this file, registration.go): a service registers its instance through the
// gateway's management API and keeps it alive with heartbeats:
//
//	c := discovery.NewClient("http://gateway:8080", os.Getenv("ADMIN_TOKEN"), nil)
//	reg, err := c.Register(ctx, discovery.ServiceInfo{
//		Name: "user-service", Host: "10.0.0.7", Port: 8080, TTL: 30 * time.Second,
//		Health: &discovery.HealthCheck{HTTP: "http://10.0.0.7:8080/health", Interval: 10 * time.Second},
//	})
//	defer reg.Deregister(context.Background())
//
// The server side (sweeper.go, prober.go, lease.go, runner.go) runs inside the gateway: a
// sweeper marks instances that missed their TTL as expired, and an optional prober checks
// each instance's health URL; both write through the store, so every replica serves the
// same endpoints, and only the replica holding a lease does the work.
package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/api-gateway/api-gateway/model"
)

// ServicesPath is the management API collection of service instances.
const ServicesPath = "/api/v1/management/services"

// ServiceInfo describes one instance of a service.
type ServiceInfo struct {
	ID       string // default "<name>-<host>-<port>" (chosen by the gateway)
	Name     string
	Host     string
	Port     int
	Protocol string // http (default), http2 or grpc
	Health   *HealthCheck
	Weight   int // 0 = the gateway's default weight
	Zone     string
	Metadata map[string]string
	// TTL: without a heartbeat for this long the instance leaves the load balancing.
	// Registration heartbeats every TTL/3. 0 = the instance never expires (no heartbeats).
	TTL time.Duration
}

// HealthCheck is the instance's health endpoint, probed by Envoy or by the gateway.
type HealthCheck struct {
	HTTP     string
	Interval time.Duration
	Timeout  time.Duration
}

// toModel converts to the management API's JSON shape.
func (s ServiceInfo) toModel() *model.Service {
	m := &model.Service{
		ID: s.ID, Name: s.Name, Host: s.Host, Port: s.Port, Protocol: s.Protocol, Zone: s.Zone,
		Metadata: s.Metadata, TTL: model.Duration(s.TTL),
	}
	if s.Weight > 0 {
		w := s.Weight
		m.Weight = &w
	}
	if s.Health != nil {
		m.HealthCk = &model.ServiceHealth{
			HTTP: s.Health.HTTP, Interval: model.Duration(s.Health.Interval), Timeout: model.Duration(s.Health.Timeout),
		}
	}
	return m
}

// Client talks to the gateway's management API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// NewClient returns a client for the management API at baseURL (e.g. "http://gateway:8080")
// with the admin bearer token. A nil httpClient means one with a 10 s timeout.
func NewClient(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 10 * time.Second}
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: httpClient}
}

// DefaultClient is built from the environment: API_GATEWAY_URL (default
// http://localhost:8080) and API_GATEWAY_TOKEN (or ADMIN_TOKEN).
func DefaultClient() *Client {
	base := os.Getenv("API_GATEWAY_URL")
	if base == "" {
		base = "http://localhost:8080"
	}
	tok := os.Getenv("API_GATEWAY_TOKEN")
	if tok == "" {
		tok = os.Getenv("ADMIN_TOKEN")
	}
	return NewClient(base, tok, nil)
}

// Register registers the instance with DefaultClient (see Client.Register).
func Register(ctx context.Context, info ServiceInfo) (*Registration, error) {
	return DefaultClient().Register(ctx, info)
}

// APIError is an error answer of the management API.
type APIError struct {
	Status  int
	Code    string
	Message string
	Details []model.FieldError
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("gateway answered %d", e.Status)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	for _, d := range e.Details {
		msg += "; " + d.Field + ": " + d.Problem
	}
	return msg
}

// IsNotFound reports whether err is the API's 404.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		ae := &APIError{Status: resp.StatusCode}
		var env struct {
			Error struct {
				Code    string             `json:"code"`
				Message string             `json:"message"`
				Details []model.FieldError `json:"details"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &env) == nil {
			ae.Code, ae.Message, ae.Details = env.Error.Code, env.Error.Message, env.Error.Details
		} else {
			ae.Message = strings.TrimSpace(string(b))
		}
		return ae
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode %s %s answer: %w", method, path, err)
		}
	}
	return nil
}

// Put registers (or re-registers: the same id replaces) an instance once, without
// heartbeats, and returns it as stored.
func (c *Client) Put(ctx context.Context, info ServiceInfo) (*model.Service, error) {
	var out model.Service
	if err := c.do(ctx, http.MethodPost, ServicesPath, info.toModel(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Heartbeat renews the TTL of an instance.
func (c *Client) Heartbeat(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPut, ServicesPath+"/"+url.PathEscape(id)+"/heartbeat", nil, nil)
}

// Deregister removes an instance; a missing one is not an error.
func (c *Client) Deregister(ctx context.Context, id string) error {
	err := c.do(ctx, http.MethodDelete, ServicesPath+"/"+url.PathEscape(id), nil, nil)
	if IsNotFound(err) {
		return nil
	}
	return err
}

// Instances lists the registered instances of a service name (every name when empty).
func (c *Client) Instances(ctx context.Context, name string) ([]model.Service, error) {
	path := ServicesPath
	if name != "" {
		path += "?name=" + url.QueryEscape(name)
	}
	var raw json.RawMessage
	if err := c.do(ctx, http.MethodGet, path, nil, &raw); err != nil {
		return nil, err
	}
	return decodeList(raw)
}

// decodeList accepts a bare JSON array or an object wrapping it ({"items": [...]}, or any
// single array field).
func decodeList(raw json.RawMessage) ([]model.Service, error) {
	var out []model.Service
	if err := json.Unmarshal(raw, &out); err == nil {
		return out, nil
	}
	var wrapped map[string]json.RawMessage
	if err := json.Unmarshal(raw, &wrapped); err != nil {
		return nil, fmt.Errorf("decode instance list: %w", err)
	}
	for _, k := range []string{"items", "services", "data"} {
		if v, ok := wrapped[k]; ok {
			if err := json.Unmarshal(v, &out); err != nil {
				return nil, fmt.Errorf("decode instance list: %w", err)
			}
			return out, nil
		}
	}
	return nil, errors.New("decode instance list: no array in the answer")
}
