package upstream

import (
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// CallConfig holds the settings the Tenant Service and Genesys login clients
// share; TenantClientConfig and LoginClientConfig embed it. Every zero value
// means the documented default.
type CallConfig struct {
	// Timeout bounds each attempt, including reading the body; 0 means the
	// client's default (5 s for the Tenant Service, 10 s for the login).
	Timeout time.Duration
	// MaxRetries is the number of retries after the first attempt: 0 means 2
	// (3 attempts in all), a negative value means no retry.
	MaxRetries int
	// BackoffMin and BackoffMax bound the exponential backoff after 5xx,
	// timeouts and network errors when the upstream gave no Retry-After; 0
	// means 500 ms and 4 s. ±20 % jitter is applied, never above BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// MaxRetryAfter caps the Retry-After the client waits for; 0 means 30 s.
	// A longer Retry-After ends the call at once with the server's value in
	// Error.RetryAfterHint, rather than retrying earlier than asked.
	MaxRetryAfter time.Duration
	// Breaker configures the circuit breakers, one per upstream host. The
	// zero value means the defaults (open when at least half of at least 10
	// attempts within the last 10 s failed and the failures came from at
	// least 5 tenants, for 10 s, then 2 probes).
	Breaker BreakerConfig
	// HTTPClient sends the requests; nil means a client over a clone of
	// http.DefaultTransport, which honours HTTPS_PROXY, HTTP_PROXY and
	// NO_PROXY. The client is copied and redirects are never followed.
	HTTPClient *http.Client
	// Logger receives a warning per retry; nil discards. No client ID,
	// secret, Authorization value or token is ever logged.
	Logger *slog.Logger
	// TracerProvider traces each call as a span, with one HTTP client span
	// per attempt below it and an event "retry" per scheduled retry. Nil
	// means no spans.
	TracerProvider trace.TracerProvider
	// MeterProvider receives the call, attempt and retry metrics
	// (token_sidecar.upstream.*). Nil means no metrics.
	MeterProvider metric.MeterProvider
	// Propagator injects the trace context into every request, e.g.
	// propagation.TraceContext{} for the W3C traceparent header. Nil means
	// propagation.TraceContext{} when TracerProvider is set, and no
	// instrumentation of the HTTP stack at all when both are nil.
	Propagator propagation.TextMapPropagator
	// MetricsTenantLabel labels the call and retry counters with the tenant
	// ID (never a histogram). False, the zero value, keeps the metrics'
	// cardinality independent of the number of tenants.
	MetricsTenantLabel bool
}

func (cfg CallConfig) telemetry() telemetryConfig {
	return telemetryConfig{cfg.TracerProvider, cfg.MeterProvider, cfg.Propagator, cfg.MetricsTenantLabel}
}
