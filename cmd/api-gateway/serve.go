package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/api-gateway/api-gateway/analytics"
	"github.com/api-gateway/api-gateway/internal/grpctls"
	"github.com/api-gateway/api-gateway/internal/pipeline"
	"github.com/api-gateway/api-gateway/internal/telemetry"
	"github.com/api-gateway/api-gateway/manage"
	"github.com/api-gateway/api-gateway/store"
	"github.com/api-gateway/api-gateway/waf"
)

// app holds what every component's wire function may use (serve lists them, in order).
type app struct {
	cfg     config
	log     *slog.Logger
	reg     *prometheus.Registry
	store   store.Store
	pipe    *pipeline.Pipeline
	grpc    *grpc.Server
	grpcOpt []grpc.ServerOption
	api     *manage.API
	health  *health.Server
	closers []func() error
	// drains end long-lived gRPC streams (ADS) at the start of shutdown; see stopGRPC.
	drains []func()
	unary  unaryInFlight
	runs   []func(ctx context.Context)
	keys   manage.KeyMinter
}

func runServe(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configFile := fs.String("config", "", "declarative config file (YAML) applied at start and on SIGHUP")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "api-gateway:", err)
		return 2
	}
	cfg.ConfigFile = *configFile
	log := newLogger(cfg.LogLevel, os.Stderr)
	// go-redis logs through one process-wide logger (it has no per-client option): set here,
	// once, before any client exists.
	redis.SetLogger(redisLogger{log})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, cfg, log); err != nil {
		log.Error("api-gateway stopped with an error", "error", err.Error())
		return 1
	}
	return 0
}

// serve builds the app, starts every server and blocks until ctx ends, then shuts down
// gracefully: in-flight requests finish, the store closes cleanly.
func serve(ctx context.Context, cfg config, log *slog.Logger) error {
	a := &app{cfg: cfg, log: log, reg: telemetry.NewRegistry()}
	shutdownTracing, err := telemetry.SetupTracing(ctx, cfg.ServiceName, version)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()
	defer func() {
		for i := len(a.closers) - 1; i >= 0; i-- {
			if err := a.closers[i](); err != nil {
				log.Warn("close", "error", err.Error())
			}
		}
	}()

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	a.store = st
	a.closers = append(a.closers, st.Close)

	tokenHash, err := adminToken(cfg, log, os.Stdout)
	if err != nil {
		return err
	}
	a.pipe = pipeline.New(st, log)
	a.health = health.NewServer()
	a.api = manage.New(manage.Options{Store: st, Model: a.pipe, Logger: log, AdminTokenHash: tokenHash, CORSOrigins: cfg.CORSOrigins,
		// The API answers with the id telemetry.HTTPMiddleware gave the request, and its
		// handlers log it: both read the id where the log handler does.
		RequestIDFromContext: telemetry.RequestIDFrom, RequestIDContext: telemetry.WithRequestID})
	a.grpcOpt = append(a.grpcOpt, grpc.MaxConcurrentStreams(1<<20))
	a.grpcOpt = append(a.grpcOpt, a.unary.serverOptions()...)
	// A WAF route's CheckRequest carries the whole body, up to max_request_body_size: more
	// than grpc-go's 4 MiB default receive limit (a larger message would fail the Check).
	a.grpcOpt = append(a.grpcOpt, grpc.MaxRecvMsgSize(waf.MaxCheckRequestBytes))
	recoverOpts, err := telemetry.GRPCRecovery(log, a.reg)
	if err != nil {
		return err
	}
	a.grpcOpt = append(a.grpcOpt, recoverOpts...)
	a.grpcOpt = append(a.grpcOpt, telemetry.GRPCServerOptions()...)
	// The access-log stream is decoded by a faster codec; every other message passes through
	// to the standard protobuf codec unchanged.
	a.grpcOpt = append(a.grpcOpt, analytics.ServerOption())
	creds, err := grpcCredentials(cfg, log)
	if err != nil {
		return err
	}
	a.grpcOpt = append(a.grpcOpt, creds)
	a.grpc = grpc.NewServer(a.grpcOpt...)
	healthpb.RegisterHealthServer(a.grpc, a.health)

	// The components, wired in this order. Pipeline consumers commit each revision in the
	// order they are added (ratelimit, authz, xds): the rate-limit rules and the ext_authz
	// tables of a revision are in place before xDS sends Envoy the routes that use them.
	// Closers run in reverse, so a component closes before anything it was given.
	components := []struct {
		name string
		wire func() error
	}{
		// First: the refusal metrics exist before any consumer can refuse a revision.
		{"pipeline", a.wirePipeline},
		{"analytics", a.wireAnalytics},
		{"ratelimit", a.wireRateLimit},
		// Also mints API keys for the management API (a.keys, checked below).
		{"authz", a.wireAuthz},
		{"xds", a.wireXDS},
		// Not a consumer: its sweeper and prober write to the store (the consumers then follow
		// the revisions those writes make) and start with the other runs, after the first Sync.
		{"discovery", a.wireDiscovery},
	}
	for _, c := range components {
		if err := c.wire(); err != nil {
			return fmt.Errorf("start %s: %w", c.name, err)
		}
	}
	if a.keys == nil {
		return errors.New("no API key minter was wired")
	}
	a.api.Keys = a.keys

	// Apply the declarative file, then the whole model, before serving anything.
	if cfg.ConfigFile != "" {
		if err := applyConfigFile(ctx, a, cfg.ConfigFile, false); err != nil {
			return err
		}
	}
	if err := a.pipe.Sync(ctx); err != nil {
		// A stored revision the consumers refuse must not keep the gateway down (a restart
		// loop leaves no API to fix it with): it starts not ready, /ready naming the refusal.
		var refused *pipeline.RefusedError
		if !errors.As(err, &refused) {
			return fmt.Errorf("initial configuration: %w", err)
		}
	}

	grpcL, err := net.Listen("tcp", net.JoinHostPort(cfg.GRPCBindAddr, strconv.Itoa(cfg.GRPCPort)))
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	httpL, err := net.Listen("tcp", cfg.addr(cfg.Port))
	if err != nil {
		return fmt.Errorf("api listener: %w", err)
	}
	metricsL, err := net.Listen("tcp", cfg.addr(cfg.MetricsPort))
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	apiSrv := &http.Server{Handler: telemetry.HTTPMiddleware(a.api), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /metrics", telemetry.MetricsHandler(a.reg))
	metricsMux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	metricsSrv := &http.Server{Handler: metricsMux, ReadHeaderTimeout: 10 * time.Second}

	runCtx, cancelRuns := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.pipe.Run(runCtx); close(done) }()
	var runs sync.WaitGroup
	for _, run := range a.runs {
		runs.Go(func() { run(runCtx) })
	}
	errCh := make(chan error, 3)
	go func() { errCh <- a.grpc.Serve(grpcL) }()
	go func() { errCh <- ignoreClosed(apiSrv.Serve(httpL)) }()
	go func() { errCh <- ignoreClosed(metricsSrv.Serve(metricsL)) }()
	hup := make(chan os.Signal, 1)
	if cfg.ConfigFile != "" {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	a.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	log.Info("api-gateway serving", "version", version, "api", httpL.Addr().String(), "grpc", grpcL.Addr().String(),
		"metrics", metricsL.Addr().String(), "store", storeKind(cfg), "revision", a.pipe.Applied())

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-hup:
			if err := applyConfigFile(ctx, a, cfg.ConfigFile, true); err != nil {
				log.Error("config reload rejected; nothing changed", "file", cfg.ConfigFile, "error", err.Error())
			} else {
				log.Info("config reloaded", "file", cfg.ConfigFile)
			}
		case err := <-errCh:
			if err != nil {
				runErr = err
				break loop
			}
		}
	}
	log.Info("shutting down")
	a.health.Shutdown()
	shutCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(shutCtx)
	_ = metricsSrv.Shutdown(shutCtx)
	stopGRPC(a.grpc, &a.unary, a.drains, defaultGRPCStop)
	cancelRuns()
	<-done
	// The runs end before the closers close the store they write to and whose connection
	// they use: the discovery runner releases its lease on the way out (another replica
	// sweeps at once, not after the lease's TTL).
	runs.Wait()
	return runErr
}

// grpcCredentials is TLS from files re-read on change when GRPC_TLS_* is set, else
// plaintext, with a warning when the plaintext port listens beyond loopback: it serves the
// whole configuration over xDS, and Check, ShouldRateLimit and access logs, to whoever can
// reach it.
func grpcCredentials(cfg config, log *slog.Logger) (grpc.ServerOption, error) {
	if !cfg.GRPCTLS.Enabled() {
		if ip := net.ParseIP(cfg.GRPCBindAddr); !strings.EqualFold(cfg.GRPCBindAddr, "localhost") && (ip == nil || !ip.IsLoopback()) {
			log.Warn("the gRPC port is plaintext and unauthenticated on every interface it listens on; "+
				"set GRPC_TLS_CERT_FILE/GRPC_TLS_KEY_FILE (and GRPC_TLS_CLIENT_CA_FILE for mutual TLS) "+
				"or GRPC_BIND_ADDRESS to a private address", "grpc_bind_address", cfg.GRPCBindAddr)
		}
		return grpc.Creds(insecure.NewCredentials()), nil
	}
	r, err := grpctls.New(cfg.GRPCTLS, log.With("component", "grpc-tls"))
	if err != nil {
		return nil, err
	}
	log.Info("gRPC port serves TLS", "cert", cfg.GRPCTLS.CertFile, "client_ca", cfg.GRPCTLS.ClientCAFile,
		"client_cert_required", cfg.GRPCTLS.RequireClientCert)
	return grpc.Creds(credentials.NewTLS(r.ServerConfig())), nil
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func storeKind(cfg config) string {
	if cfg.RedisURL != "" {
		return "redis"
	}
	return "embedded"
}

// openStore opens Redis when REDIS_URL is set, else the embedded file under DATA_DIR.
func openStore(ctx context.Context, cfg config, log *slog.Logger) (store.Store, error) {
	if cfg.RedisURL != "" {
		return openRedisStore(ctx, cfg.RedisURL, log)
	}
	path := filepath.Join(cfg.DataDir, "gateway.db")
	st, err := store.OpenBolt(path)
	if err != nil {
		return nil, err
	}
	log.Info("embedded store opened", "path", path)
	return st, nil
}

// adminToken returns the hash of the admin token: ADMIN_TOKEN, or a token generated at the
// first start, written to DATA_DIR/admin-token (mode 0600) and printed once. Only the hash
// stays in memory; DATA_DIR/admin-token.sha256 keeps it if the token file is removed.
func adminToken(cfg config, log *slog.Logger, out io.Writer) ([32]byte, error) {
	if cfg.AdminToken != "" {
		return manage.HashToken(cfg.AdminToken), nil
	}
	tokPath := filepath.Join(cfg.DataDir, "admin-token")
	hashPath := tokPath + ".sha256"
	if b, err := os.ReadFile(tokPath); err == nil {
		return manage.HashToken(strings.TrimSpace(string(b))), nil
	}
	if b, err := os.ReadFile(hashPath); err == nil {
		var h [32]byte
		if n, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%x", &h); err == nil && n == 1 {
			return h, nil
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return [32]byte{}, err
	}
	tok := manage.NewToken()
	if err := os.WriteFile(tokPath, []byte(tok+"\n"), 0o600); err != nil {
		return [32]byte{}, fmt.Errorf("write admin token: %w", err)
	}
	h := manage.HashToken(tok)
	if err := os.WriteFile(hashPath, []byte(fmt.Sprintf("%x\n", h)), 0o600); err != nil {
		return [32]byte{}, fmt.Errorf("write admin token hash: %w", err)
	}
	fmt.Fprintf(out, "Generated an admin token (shown once; also in %s):\n  %s\n", tokPath, tok)
	log.Info("admin token generated", "file", tokPath)
	return h, nil
}
