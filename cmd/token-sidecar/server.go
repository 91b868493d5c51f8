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
	"runtime/debug"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/proxy"
	"github.com/token-sidecar/token-sidecar/upstream"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// Server timeouts. The write timeout leaves room for the longest wait a
// caller can be made to do (-request-timeout) plus writing the answer.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = 90 * time.Second
	maxHeaderBytes    = 16 << 10
	writeTimeoutSlack = 5 * time.Second
)

// demoRegion is the region of the demo tenants' credentials.
const demoRegion = "eu-west-1"

// listening is told the bound addresses once both listeners accept
// connections; tests use it to learn the ports of ":0" listeners.
type listening func(tokenAddr, adminAddr string)

// runOption changes how runWith runs, for tests.
type runOption func(*runOptions)

type runOptions struct {
	// telemetry adds span processors and metric readers to the providers.
	telemetry telemetryOptions
	// inspectTelemetry sees the telemetry setup once it is built.
	inspectTelemetry func(*telemetry)
}

// telemetryShutdownTimeout bounds the last export of spans and metrics at
// exit, so that an unreachable collector cannot hold the process.
const telemetryShutdownTimeout = 5 * time.Second

// runWith is run, plus a hook called once both listeners are up and test
// options.
func runWith(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready listening, opts ...runOption) (err error) {
	var o runOptions
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return nil
	case errors.Is(err, errUsage):
		return err
	case err != nil:
		slog.New(slog.NewJSONHandler(stderr, nil)).Error("invalid configuration", "error", err.Error())
		return fmt.Errorf("invalid configuration: %w", err)
	}
	logger := slog.New(newTraceLogHandler(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})))
	defer func() {
		if err != nil {
			logger.Error("token-sidecar failed", "error", err.Error())
		}
	}()

	tel, err := newTelemetry(ctx, getenv, logger, o.telemetry)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	if o.inspectTelemetry != nil {
		o.inspectTelemetry(tel)
	}
	// Deferred first, so it runs last: after the listeners and the cache
	// have stopped, the spans of the last requests are flushed.
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), telemetryShutdownTimeout)
		defer cancel()
		if serr := tel.shutdown(sctx); serr != nil {
			logger.Warn("telemetry did not flush at exit", "error", serr.Error())
		}
	}()

	if cfg.Demo {
		demo := upstreamtest.NewDemo(demoRegion)
		defer demo.Close()
		cfg.TenantServiceURL = demo.TenantService.URL()
		cfg.GenesysLoginURL = demo.Login.URL()
		cfg.GenesysAPIURL = demo.API.URL()
	}

	source, err := newPipeline(cfg, logger, tel)
	if err != nil {
		return err
	}
	fetcher, closeShared, err := withSharedCache(cfg, source, logger, tel)
	if err != nil {
		return err
	}
	defer closeShared()
	tokens, err := cache.New(cache.Config{
		Source:               fetcher,
		Capacity:             cfg.CacheCapacity,
		MaxConcurrentFetches: cfg.MaxConcurrentFetches,
		RefreshAt:            cfg.RefreshAt,
		NegativeTTL:          cfg.NegativeTTL,
		IsNegative:           isNegative,
		MinRefreshInterval:   cfg.MinRefreshInterval,
		// The shared fetch may outlive every caller; bound it by the longest
		// the upstreams can take with all their retries, roughly.
		FetchTimeout:       3*(cfg.TenantServiceTimeout+cfg.OAuthTimeout) + 30*time.Second,
		Logger:             logger,
		MeterProvider:      tel.meter(),
		TracerProvider:     tel.tracerProvider,
		MetricsTenantLabel: cfg.MetricsTenantLabel,
	})
	if err != nil {
		return err
	}
	defer tokens.Close()

	tokenHandler, err := proxy.NewTokenHandler(proxy.Config{
		Cache:                tokens,
		Providers:            source.Providers(),
		DefaultTenant:        cfg.DefaultTenant,
		AllowedTenants:       cfg.AllowedTenants,
		RequireRequestHeader: cfg.RequireRequestHeader,
		RequestTimeout:       cfg.RequestTimeout,
		APIProxyTimeout:      cfg.ProxyTimeout,
		Logger:               logger,
		MeterProvider:        tel.meter(),
		TracerProvider:       tel.tracerProvider,
		Propagator:           tel.propagator,
		MetricsTenantLabel:   cfg.MetricsTenantLabel,
		LatencyBuckets:       upstream.LatencyBuckets,
		APITransport:         tel.wrapClientTransport(proxy.NewAPITransport(), "genesys_api"),
	})
	if err != nil {
		return err
	}
	var isReady atomic.Bool
	adminHandler := proxy.NewAdminHandler(proxy.AdminConfig{
		Ready:   isReady.Load,
		Metrics: tel.metrics,
		Logger:  logger,
	})

	// Listen before serving, so that a taken port fails the start at once.
	tokenLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("token listener: %w", err)
	}
	if cfg.MaxConnections > 0 {
		// Bounds the goroutines and buffers a flood of clients can pin;
		// connections beyond it wait in the kernel's backlog.
		tokenLn = netutil.LimitListener(tokenLn, cfg.MaxConnections)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		tokenLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	tokenSrv := newHTTPServer(tel.wrapTokenHandler(tokenHandler), cfg.RequestTimeout+writeTimeoutSlack, logger)
	adminSrv := newHTTPServer(tel.wrapHandler(adminHandler, "admin"), readTimeout, logger)

	serveErr := make(chan error, 2)
	serve := func(name string, srv *http.Server, ln net.Listener) {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- fmt.Errorf("%s listener: %w", name, err)
		}
	}
	go serve("token", tokenSrv, tokenLn)
	go serve("admin", adminSrv, adminLn)
	isReady.Store(true)
	logger.Info("token-sidecar started", "version", buildVersion(),
		"token_addr", tokenLn.Addr().String(), "admin_addr", adminLn.Addr().String(), "demo", cfg.Demo,
		"telemetry_exporters", tel.exporters)
	if cfg.Demo {
		printDemoHelp(stdout, tokenLn.Addr().String(), cfg.RequireRequestHeader)
	}
	if ready != nil {
		ready(tokenLn.Addr().String(), adminLn.Addr().String())
	}

	var runErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down: finishing in-flight requests", "timeout", cfg.ShutdownTimeout.String())
	case runErr = <-serveErr:
		logger.Error("listener failed; shutting down", "error", runErr.Error())
	}
	isReady.Store(false)
	// A fresh context: the one that told us to stop is already done.
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if serr := tokenSrv.Shutdown(shutdownCtx); serr != nil {
		logger.Warn("token listener did not finish in time", "error", serr.Error())
		tokenSrv.Close()
	}
	if serr := adminSrv.Shutdown(shutdownCtx); serr != nil {
		adminSrv.Close()
	}
	logger.Info("token-sidecar stopped")
	return runErr
}

// newHTTPServer builds a server with timeouts; http.Server's zero values have
// none, which lets a slow client hold a connection for ever.
func newHTTPServer(h http.Handler, writeTimeout time.Duration, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

// isNegative reports the errors that retrying soon cannot fix, which the
// cache may remember for -negative-ttl.
func isNegative(err error) bool {
	var ue *upstream.Error
	if !errors.As(err, &ue) {
		return false
	}
	return ue.Code == upstream.CodeCredentialsNotFound || ue.Code == upstream.CodeOAuthInvalidGrant
}

func printDemoHelp(w io.Writer, tokenAddr string, header bool) {
	// A wildcard listener is reachable on loopback; curl cannot dial "[::]".
	if host, port, err := net.SplitHostPort(tokenAddr); err == nil && (host == "" || net.ParseIP(host).IsUnspecified()) {
		tokenAddr = net.JoinHostPort("127.0.0.1", port)
	}
	h := ""
	if header {
		h = "-H 'X-Token-Request: true' "
	}
	fmt.Fprintf(w, `token-sidecar is running on fake upstreams (demo mode): any tenant ID gets a token.
Ask for a token:
  curl -s %s'http://%s/token?tenant=demo-tenant'
Force a refresh:
  curl -s -X POST %s'http://%s/token/refresh?tenant=demo-tenant'
Stop with Ctrl-C.
`, h, tokenAddr, h, tokenAddr)
}

// buildVersion is the stamped version, else the module version from the
// build info (go install), else "dev".
func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}
