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
	maxHeaderBytes    = 16 << 10
	writeTimeoutSlack = 5 * time.Second
)

// fetchTimeoutSlack is added to the upstreams' longest call for the rest of
// a fetch (parsing, the region, the cache's own work).
const fetchTimeoutSlack = time.Second

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
	// memoryLimit replaces where the soft memory limit is read and set.
	memoryLimit memoryLimitHooks
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
		slog.New(newBoundedHandler(slog.NewJSONHandler(stderr, nil))).Error("invalid configuration", "error", err.Error())
		return fmt.Errorf("invalid configuration: %w", err)
	}
	logger := slog.New(newTraceLogHandler(newBoundedHandler(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))))
	defer func() {
		if err != nil {
			logger.Error("token-sidecar failed", "error", err.Error())
		}
	}()
	// net/http's transport logs through package log; so may any library.
	defer routeStdlibLog(logger)()

	memLimit := applyMemoryLimit(getenv, o.memoryLimit, logger)

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

	var demo *upstreamtest.Demo
	if cfg.Demo {
		demo = upstreamtest.NewDemo(demoRegion)
		defer demo.Close()
		cfg.TenantServiceURL = demo.TenantService.URL()
		cfg.GenesysLoginURL = demo.Login.URL()
		cfg.GenesysAPIURL = demo.API.URL()
	}

	credKeys, err := loadCredentialKeys(cfg, demo, logger, tel.meter())
	if err != nil {
		return err
	}
	credKeys.watch(ctx, cfg, logger)
	defer credKeys.close()

	source, err := newPipeline(cfg, logger, tel, credKeys.decryption(cfg.RequireEncryptedCredentials))
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
		NegativeCapacity:     cfg.NegativeCapacity,
		RefreshRetryDelay:    cfg.RefreshRetryInterval,
		// The shared fetch may outlive every caller; bound it by the longest
		// the upstreams can take with all their retries, so that it is never
		// cut off between two retries — plus, with a shared cache, what it
		// may spend on the server and waiting for another pod's lease first.
		FetchTimeout:       source.pipeline.LongestIssue() + fetchTimeoutSlack + cfg.sharedCacheAllowance(),
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
		APIRetryBuffer:       cfg.apiRetryBuffer(),
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
	prefetched := prefetch(ctx, tokens, cfg.PrefetchTenants, cfg.PrefetchTimeout, logger)
	var isReady atomic.Bool
	adminHandler := proxy.NewAdminHandler(proxy.AdminConfig{
		Ready:   func() bool { return isReady.Load() && prefetched() },
		Metrics: tel.metrics,
		Logger:  logger,
	})

	// Listen before serving, so that a taken port fails the start at once.
	tokenLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("token listener: %w", err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		tokenLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	tokenSrv := newHTTPServer(tel.wrapTokenHandler(tokenHandler), cfg.RequestTimeout+writeTimeoutSlack, cfg.IdleTimeout, logger)
	adminSrv := newHTTPServer(tel.wrapHandler(adminHandler, "admin"), readTimeout, cfg.IdleTimeout, logger)
	// Bound the goroutines and buffers a flood of clients can pin, in a way
	// that idle connections make room for new ones.
	tokenLn = limitConnections(tokenSrv, tokenLn, cfg.MaxConnections)
	adminLn = limitConnections(adminSrv, adminLn, cfg.AdminMaxConnections)
	tokenLimiter, _ := tokenLn.(*connLimiter)
	adminLimiter, _ := adminLn.(*connLimiter)
	if err := observeConnections(tel.meter(), map[string]*connLimiter{"token": tokenLimiter, "admin": adminLimiter}); err != nil {
		tokenLn.Close()
		adminLn.Close()
		return fmt.Errorf("connection metrics: %w", err)
	}

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
		"telemetry_exporters", tel.exporters, "memory_limit", memLimit)
	if cfg.Demo {
		printDemoHelp(stdout, tokenLn.Addr().String(), cfg.RequireRequestHeader, cfg.CredentialKeysFile == "")
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
func newHTTPServer(h http.Handler, writeTimeout, idleTimeout time.Duration, logger *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          newStdlibLogger(logger, "http.Server"),
	}
}

// apiRetryBuffer is -proxy-retry-buffer for proxy.Config, whose zero means
// the default: the flag's 0 means none.
func (c config) apiRetryBuffer() int64 {
	if c.ProxyRetryBuffer == 0 {
		return -1
	}
	return int64(c.ProxyRetryBuffer)
}

// limitConnections returns ln bounded to max connections (0: unbounded) for
// srv, which must serve the listener returned: it tells the limiter which
// connections are idle.
func limitConnections(srv *http.Server, ln net.Listener, max int) net.Listener {
	if max <= 0 {
		return ln
	}
	l := newConnLimiter(ln, max)
	srv.ConnState = l.ConnState
	return l
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

// printDemoHelp prints the curl lines of the demo; encrypted adds the
// tenant whose secret arrives as a JWE for the demo's in-memory key.
func printDemoHelp(w io.Writer, tokenAddr string, header, encrypted bool) {
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
`, h, tokenAddr)
	if encrypted {
		fmt.Fprintf(w, `Ask for the token of a tenant whose client secret arrives encrypted (a JWE, kid "demo"):
  curl -s %s'http://%s/token?tenant=%s'
`, h, tokenAddr, upstreamtest.DemoEncryptedTenant)
	}
	fmt.Fprintf(w, `Force a refresh:
  curl -s -X POST %s'http://%s/token/refresh?tenant=demo-tenant'
Stop with Ctrl-C.
`, h, tokenAddr)
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
