package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/proxy"
	"github.com/token-sidecar/token-sidecar/sharedcache"
	"github.com/token-sidecar/token-sidecar/upstream"
)

// config is every setting of the sidecar. Each is a flag and an environment
// variable named SIDECAR_ + the flag name in upper snake case; the flag wins.
type config struct {
	Demo bool

	Listen      string
	AdminListen string

	TenantServiceURL     string
	ServiceName          string
	TenantServiceTimeout time.Duration

	CredentialKeysFile          string
	CredentialKeysPollInterval  time.Duration
	RequireEncryptedCredentials bool

	GenesysLoginURL string
	GenesysAPIURL   string
	OAuthTimeout    time.Duration
	OAuthMaxRetries int

	BreakerFailureThreshold int
	BreakerFailureRate      float64
	BreakerWindow           time.Duration
	BreakerOpenDuration     time.Duration
	BreakerHalfOpenProbes   int

	DefaultTenant        string
	AllowedTenants       []string
	RequireRequestHeader bool
	RequestTimeout       time.Duration
	ProxyTimeout         time.Duration
	ProxyRetryBuffer     byteSize

	CacheCapacity        int
	MaxConcurrentFetches int
	MaxConnections       int
	AdminMaxConnections  int
	IdleTimeout          time.Duration
	RefreshAt            float64
	NegativeTTL          time.Duration
	MinRefreshInterval   time.Duration
	StaticTokenTTL       time.Duration

	NegativeCapacity     int
	RefreshRetryInterval time.Duration
	PrefetchTenants      []cache.Key
	PrefetchTimeout      time.Duration
	SharedCacheURL       string
	SharedCacheKeyFile   string
	SharedCacheTimeout   time.Duration
	SharedCachePrefix    string
	SharedCacheLease     time.Duration

	MetricsTenantLabel bool
	ShutdownTimeout    time.Duration
	LogLevel           slog.Level
}

// envName is the environment variable that backs a flag.
func envName(flagName string) string {
	return "SIDECAR_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads flags from args and, for each flag not given, its
// environment variable through getenv. Usage and errors go to stderr.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var cfg config
	var allowed, logLevel, prefetch string
	fs := flag.NewFlagSet("token-sidecar", flag.ContinueOnError)
	fs.SetOutput(stderr)

	fs.BoolVar(&cfg.Demo, "demo", false, "start in-process fake upstreams (Tenant Service and Genesys login) and use them")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8181", "address of the token listener (/token, /token/refresh, /proxy/); loopback keeps it pod-local")
	fs.StringVar(&cfg.AdminListen, "admin-listen", ":9464", "address of the admin listener (/healthz, /readyz, /metrics)")
	fs.StringVar(&cfg.TenantServiceURL, "tenant-service-url", "", "base URL of the Tenant Service (required unless -demo)")
	fs.StringVar(&cfg.ServiceName, "service-name", "auth-service", "X-Service-Name header sent to the Tenant Service")
	fs.DurationVar(&cfg.TenantServiceTimeout, "tenant-service-timeout", 5*time.Second, "timeout of one Tenant Service attempt")
	fs.StringVar(&cfg.CredentialKeysFile, "credential-keys-file", "", "JWK Set (a mounted Secret) whose private keys open credentials the Tenant Service sends as JWEs, chosen by kid; re-read when it changes")
	fs.DurationVar(&cfg.CredentialKeysPollInterval, "credential-keys-poll-interval", 5*time.Second, "how often -credential-keys-file is checked for a change")
	fs.BoolVar(&cfg.RequireEncryptedCredentials, "require-encrypted-credentials", false, "refuse a clientSecret or accessToken that is not a JWE (502 UPSTREAM_INVALID_RESPONSE)")
	fs.StringVar(&cfg.GenesysLoginURL, "genesys-login-url", "", "login base URL used for every region instead of https://login.{domain} (proxies, tests)")
	fs.StringVar(&cfg.GenesysAPIURL, "genesys-api-url", "", "API base URL used for every region instead of https://api.{domain}")
	fs.DurationVar(&cfg.OAuthTimeout, "oauth-timeout", 10*time.Second, "timeout of one Genesys token exchange attempt")
	fs.IntVar(&cfg.OAuthMaxRetries, "oauth-max-retries", 2, "retries of a failed Genesys token exchange (0 = none)")
	fs.IntVar(&cfg.BreakerFailureThreshold, "breaker-failure-threshold", 5, "fewest host failures (5xx, timeouts, network errors), and fewest distinct tenants they come from, that open an upstream host's circuit breaker: it opens only once -breaker-window holds failures of that many tenants and threshold / -breaker-failure-rate attempts, rounded up (0 = no breakers)")
	fs.Float64Var(&cfg.BreakerFailureRate, "breaker-failure-rate", 0.5, "share of an upstream host's attempts within -breaker-window that must fail to open its circuit breaker, in (0, 1]")
	fs.DurationVar(&cfg.BreakerWindow, "breaker-window", 10*time.Second, "rolling period over which a circuit breaker counts its host's attempts and failures")
	fs.DurationVar(&cfg.BreakerOpenDuration, "breaker-open-duration", 10*time.Second, "how long an open circuit breaker answers 503 at once before it probes the host again")
	fs.IntVar(&cfg.BreakerHalfOpenProbes, "breaker-half-open-probes", 2, "probe attempts a half-open circuit breaker lets through; all must succeed to close it")
	fs.StringVar(&cfg.DefaultTenant, "default-tenant", "", "tenant used when a request names none")
	fs.StringVar(&allowed, "allowed-tenants", "", "comma-separated tenants that may be served (empty = all)")
	fs.BoolVar(&cfg.RequireRequestHeader, "require-request-header", true, "require the header X-Token-Request: true on the token listener (anti-SSRF)")
	fs.DurationVar(&cfg.RequestTimeout, "request-timeout", 15*time.Second, "how long a caller waits for a token before 504 TIMEOUT")
	fs.DurationVar(&cfg.ProxyTimeout, "proxy-timeout", 10*time.Minute, "longest a /proxy/ request may take, streaming included")
	cfg.ProxyRetryBuffer = proxy.DefaultAPIRetryBuffer
	fs.Var(&cfg.ProxyRetryBuffer, "proxy-retry-buffer", "request bodies all /proxy/ requests together may keep buffered for a retry after a 401 (e.g. 32MiB); a body past it streams and is not retried (0 = none buffered)")
	fs.IntVar(&cfg.CacheCapacity, "cache-capacity", 10000, "maximum cached tenants; the least recently used is evicted")
	fs.IntVar(&cfg.MaxConcurrentFetches, "max-concurrent-fetches", 64, "fetch-then-exchanges running at once across all tenants; more wait for a slot (0 = no bound)")
	fs.IntVar(&cfg.MaxConnections, "max-connections", 1024, "open connections the token listener keeps at once; at the limit a new connection closes the one idle longest, and when all are busy more wait in the listen backlog (0 = no bound)")
	fs.IntVar(&cfg.AdminMaxConnections, "admin-max-connections", 256, "open connections the admin listener keeps at once, with the same rule as -max-connections (0 = no bound)")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", 30*time.Second, "how long both listeners keep an idle keep-alive connection open")
	fs.Float64Var(&cfg.RefreshAt, "refresh-at", 0.8, "fraction of a token's lifetime after which it is refreshed ahead of expiry")
	fs.DurationVar(&cfg.NegativeTTL, "negative-ttl", 5*time.Second, "how long CREDENTIALS_NOT_FOUND and OAUTH_INVALID_GRANT are cached (0 = not at all)")
	fs.DurationVar(&cfg.MinRefreshInterval, "min-refresh-interval", 5*time.Second, "least time between two forced refreshes of one tenant")
	fs.DurationVar(&cfg.StaticTokenTTL, "static-token-ttl", 5*time.Minute, "how long a provider's static token (whatsapp) is cached at most")
	fs.IntVar(&cfg.NegativeCapacity, "negative-capacity", 1000, "maximum cached errors (CREDENTIALS_NOT_FOUND, OAUTH_INVALID_GRANT), kept apart from the tokens; the least recently used is evicted")
	fs.DurationVar(&cfg.RefreshRetryInterval, "refresh-retry-interval", 5*time.Second, "longest wait before a failed refresh ahead is tried again (or a quarter of the time left before the safety margin, if shorter; at least 1s)")
	fs.StringVar(&prefetch, "prefetch-tenants", "", "comma-separated tenants (tenant or provider:tenant) fetched at start; /readyz waits for them")
	fs.DurationVar(&cfg.PrefetchTimeout, "prefetch-timeout", 30*time.Second, "longest /readyz waits for -prefetch-tenants")
	fs.StringVar(&cfg.SharedCacheURL, "shared-cache-url", "", "redis:// or rediss:// URL of a Redis 6+ or Valkey server whose tokens all sidecars naming it share (empty = no shared cache)")
	fs.StringVar(&cfg.SharedCacheKeyFile, "shared-cache-key-file", "", "file of base64 32-byte keys, one a line, that seal and name shared entries: the first seals, all open (required with -shared-cache-url)")
	fs.DurationVar(&cfg.SharedCacheTimeout, "shared-cache-timeout", sharedcache.DefaultTimeout, "timeout of one shared-cache command; slower answers make the sidecar fetch on its own")
	fs.StringVar(&cfg.SharedCachePrefix, "shared-cache-prefix", sharedcache.DefaultPrefix, "prefix of every name the sidecar writes to the shared cache")
	fs.DurationVar(&cfg.SharedCacheLease, "shared-cache-lease", sharedcache.DefaultLease, "fleet fetch lease: renewed while its holder fetches, so the longest a dead holder delays the others")
	fs.BoolVar(&cfg.MetricsTenantLabel, "metrics-tenant-label", false, "label metrics with the tenant ID (mind the cardinality)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long in-flight requests may take to finish on SIGTERM")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return config{}, err
		}
		return config{}, errUsage // the flag package has printed why
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("invalid %s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return config{}, envErr
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return config{}, fmt.Errorf("invalid -log-level %q: want debug, info, warn or error", logLevel)
	}
	for _, t := range strings.Split(allowed, ",") {
		if t = strings.TrimSpace(t); t != "" {
			cfg.AllowedTenants = append(cfg.AllowedTenants, t)
		}
	}
	cfg.PrefetchTenants = parsePrefetch(prefetch)
	return cfg, cfg.validate()
}

// validate refuses settings the sidecar cannot run with, naming the setting
// so that the operator can fix it from one log line.
func (c config) validate() error {
	var errs []error
	if !c.Demo {
		if c.TenantServiceURL == "" {
			errs = append(errs, errors.New("-tenant-service-url / SIDECAR_TENANT_SERVICE_URL is required (or run with -demo)"))
		} else if err := checkBaseURL(c.TenantServiceURL); err != nil {
			errs = append(errs, fmt.Errorf("-tenant-service-url: %w", err))
		}
	}
	if c.RequireEncryptedCredentials && c.CredentialKeysFile == "" && !c.Demo {
		errs = append(errs, errors.New("-require-encrypted-credentials needs -credential-keys-file / SIDECAR_CREDENTIAL_KEYS_FILE"))
	}
	if c.CredentialKeysPollInterval < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("-credential-keys-poll-interval must be at least 100ms, got %v", c.CredentialKeysPollInterval))
	}
	for name, u := range map[string]string{"-genesys-login-url": c.GenesysLoginURL, "-genesys-api-url": c.GenesysAPIURL} {
		if u != "" {
			if err := checkBaseURL(u); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	for name, addr := range map[string]string{"-listen": c.Listen, "-admin-listen": c.AdminListen} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", name, addr))
		}
	}
	if c.Listen == c.AdminListen && !strings.HasSuffix(c.Listen, ":0") {
		errs = append(errs, errors.New("-listen and -admin-listen must differ: the admin listener never serves tokens"))
	}
	if c.DefaultTenant != "" && !proxy.ValidTenantID(c.DefaultTenant) {
		errs = append(errs, fmt.Errorf("-default-tenant %q is not a valid tenant ID", c.DefaultTenant))
	}
	for _, t := range c.AllowedTenants {
		if !proxy.ValidTenantID(t) {
			errs = append(errs, fmt.Errorf("-allowed-tenants: %q is not a valid tenant ID", t))
		}
	}
	positive := map[string]time.Duration{
		"-tenant-service-timeout": c.TenantServiceTimeout,
		"-oauth-timeout":          c.OAuthTimeout,
		"-request-timeout":        c.RequestTimeout,
		"-proxy-timeout":          c.ProxyTimeout,
		"-static-token-ttl":       c.StaticTokenTTL,
		"-shutdown-timeout":       c.ShutdownTimeout,
		"-idle-timeout":           c.IdleTimeout,
	}
	for name, d := range positive {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %v", name, d))
		}
	}
	if c.NegativeTTL < 0 || c.MinRefreshInterval < 0 {
		errs = append(errs, errors.New("-negative-ttl and -min-refresh-interval must not be negative"))
	}
	if c.OAuthMaxRetries < 0 || c.OAuthMaxRetries > 10 {
		errs = append(errs, fmt.Errorf("-oauth-max-retries must be between 0 and 10, got %d", c.OAuthMaxRetries))
	}
	if c.BreakerFailureThreshold < 0 || c.BreakerFailureThreshold > 1000 {
		errs = append(errs, fmt.Errorf("-breaker-failure-threshold must be between 0 (off) and 1000, got %d", c.BreakerFailureThreshold))
	}
	if !(c.BreakerFailureRate > 0 && c.BreakerFailureRate <= 1) { // NaN too
		errs = append(errs, fmt.Errorf("-breaker-failure-rate must be above 0 and at most 1, got %v", c.BreakerFailureRate))
	}
	if c.BreakerWindow < time.Second || c.BreakerWindow > 10*time.Minute {
		errs = append(errs, fmt.Errorf("-breaker-window must be between 1s and 10m, got %v", c.BreakerWindow))
	}
	if c.BreakerOpenDuration <= 0 {
		errs = append(errs, fmt.Errorf("-breaker-open-duration must be positive, got %v", c.BreakerOpenDuration))
	}
	if c.BreakerHalfOpenProbes < 1 || c.BreakerHalfOpenProbes > 100 {
		errs = append(errs, fmt.Errorf("-breaker-half-open-probes must be between 1 and 100, got %d", c.BreakerHalfOpenProbes))
	}
	if c.MaxConcurrentFetches < 0 || c.MaxConnections < 0 || c.AdminMaxConnections < 0 {
		errs = append(errs, errors.New("-max-concurrent-fetches, -max-connections and -admin-max-connections must not be negative"))
	}
	if c.CacheCapacity < 1 {
		errs = append(errs, fmt.Errorf("-cache-capacity must be at least 1, got %d", c.CacheCapacity))
	}
	if c.SharedCacheURL != "" {
		if err := sharedcache.CheckURL(c.SharedCacheURL); err != nil {
			errs = append(errs, fmt.Errorf("-shared-cache-url: %w", err))
		}
		if c.SharedCacheKeyFile == "" {
			errs = append(errs, errors.New("-shared-cache-key-file / SIDECAR_SHARED_CACHE_KEY_FILE is required with -shared-cache-url"))
		}
		if c.SharedCacheTimeout <= 0 || c.SharedCacheLease < 3*c.SharedCacheTimeout || c.SharedCachePrefix == "" {
			errs = append(errs, errors.New("-shared-cache-timeout must be positive, -shared-cache-lease at least three timeouts, -shared-cache-prefix not empty"))
		}
	}
	if c.RefreshAt < 0.1 || c.RefreshAt > 0.99 {
		errs = append(errs, fmt.Errorf("-refresh-at must be between 0.1 and 0.99, got %v", c.RefreshAt))
	}
	errs = append(errs, c.validateCacheExtras()...)
	return errors.Join(errs...)
}

// parsePrefetch reads -prefetch-tenants: "tenant" or "provider:tenant",
// comma-separated; the provider defaults to genesys.
func parsePrefetch(list string) []cache.Key {
	var keys []cache.Key
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		provider, tenant, ok := strings.Cut(item, ":")
		if !ok {
			provider, tenant = upstream.ProviderGenesys, item
		}
		keys = append(keys, cache.Key{Provider: provider, Tenant: tenant})
	}
	return keys
}

// validateCacheExtras checks the negative capacity, the refresh retry
// interval and the prefetch settings.
func (c config) validateCacheExtras() []error {
	var errs []error
	if c.NegativeCapacity < 1 {
		errs = append(errs, fmt.Errorf("-negative-capacity must be at least 1, got %d", c.NegativeCapacity))
	}
	if c.RefreshRetryInterval < time.Second {
		errs = append(errs, fmt.Errorf("-refresh-retry-interval must be at least 1s, got %v", c.RefreshRetryInterval))
	}
	if c.PrefetchTimeout <= 0 {
		errs = append(errs, fmt.Errorf("-prefetch-timeout must be positive, got %v", c.PrefetchTimeout))
	}
	for _, k := range c.PrefetchTenants {
		if !slices.Contains(upstream.Providers(), k.Provider) {
			errs = append(errs, fmt.Errorf("-prefetch-tenants: unknown provider %q (want one of %s)", k.Provider, strings.Join(upstream.Providers(), ", ")))
		}
		if !proxy.ValidTenantID(k.Tenant) {
			errs = append(errs, fmt.Errorf("-prefetch-tenants: %q is not a valid tenant ID", k.Tenant))
		}
		if len(c.AllowedTenants) > 0 && !slices.Contains(c.AllowedTenants, k.Tenant) {
			errs = append(errs, fmt.Errorf("-prefetch-tenants: %q is not in -allowed-tenants", k.Tenant))
		}
	}
	return errs
}

// breaker is the circuit breaker setting of both upstream clients: one
// breaker per host, opening when at least the failure rate of the attempts
// within the window failed, once the window holds threshold / rate attempts
// (by default half of at least 10 attempts within 10 s).
func (c config) breaker() upstream.BreakerConfig {
	if c.BreakerFailureThreshold == 0 {
		return upstream.BreakerConfig{FailureThreshold: -1} // the flag's 0 means off
	}
	return upstream.BreakerConfig{
		FailureThreshold: c.BreakerFailureThreshold,
		FailureRate:      c.BreakerFailureRate,
		Window:           c.BreakerWindow,
		OpenDuration:     c.BreakerOpenDuration,
		HalfOpenProbes:   c.BreakerHalfOpenProbes,
	}
}

// checkBaseURL accepts an absolute http(s) URL without credentials, query or
// fragment.
func checkBaseURL(raw string) error {
	// The URL is never quoted back: a misconfigured one may hold a password.
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.User != nil {
		return errors.New("must not carry user:password (it would be logged)")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("not an absolute http(s) URL")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must not have a query or fragment")
	}
	return nil
}
