package discovery_test

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/api-gateway/api-gateway/discovery"
)

// A service registers itself at start, heartbeats while it runs, and deregisters on the way
// out. Without the Deregister (a crash), the gateway takes the instance out of the load
// balancing once its TTL passes without a heartbeat.
func ExampleClient_Register() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	c := discovery.NewClient("http://gateway:8080", os.Getenv("ADMIN_TOKEN"), nil)
	reg, err := c.Register(ctx, discovery.ServiceInfo{
		ID: "user-service-1", Name: "user-service", Host: "10.0.0.7", Port: 8080, Protocol: "http",
		Health: &discovery.HealthCheck{HTTP: "http://10.0.0.7:8080/health", Interval: 10 * time.Second, Timeout: 2 * time.Second},
		TTL:    30 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer reg.Deregister(context.Background())
	// ... serve ...
}
