// Package deploy holds the deployment files (deploy/compose, deploy/k8s, deploy/grafana,
// deploy/prometheus) and, in its tests, their checks: the compose file loads with the
// Compose spec loader, every Kubernetes manifest decodes strictly into its API type, the
// Envoy bootstraps parse as Envoy's Bootstrap proto, and the Dockerfile builds a static,
// non-root image. The heavy dependencies (compose-go, k8s.io/api) stay in the tests.
package deploy
