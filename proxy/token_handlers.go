package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/token-sidecar/token-sidecar/cache"
)

// TokenCache is what the token handlers need from the cache; *cache.Cache
// satisfies it.
//
// Both methods must be safe for concurrent use and must return promptly, with
// an error that wraps ctx.Err(), once ctx is done: the handlers bound the
// caller's wait with ctx and do not watch the call from another goroutine.
// Other errors may implement ErrorCode() string (a contract error code) and
// RetryAfter() time.Duration (a hint for the Retry-After of a 503); any other
// error is answered 500 INTERNAL_ERROR.
type TokenCache interface {
	// Get returns the key's token, cached or fetched.
	Get(ctx context.Context, key cache.Key) (cache.Token, error)
	// Refresh answers a caller that was refused with the access token
	// refused ("" = the one the cache holds now): a cached token other than
	// it, or a forced exchange within the cache's per-tenant rate limit
	// (POST /token/refresh, an API 401).
	Refresh(ctx context.Context, key cache.Key, refused string) (cache.Token, error)
}

// cachedTokens is the optional fast path of a TokenCache (*cache.Cache has
// it): the cached token when there is a usable one, with the effects of a hit
// of Get, and false, with no effect, otherwise. It must not block. A cache
// hit is answered through it without the request-timeout context, whose
// timer is the cost of a hit otherwise.
type cachedTokens interface {
	Cached(ctx context.Context, key cache.Key) (cache.Token, bool)
}

// defaultRequestTimeout is Config.RequestTimeout's zero value: the contract's
// default of -request-timeout.
const defaultRequestTimeout = 15 * time.Second

// Config configures NewTokenHandler. Every field but Cache has a usable zero
// value, stated with the field.
//
// Telemetry: MeterProvider turns on the answer counter; the http.route
// middleware is always on and costs nothing without a recording span.
// The /proxy/ API reverse proxy (api_proxy.go) is always on; APITransport is
// where its outgoing calls can be traced and metered.
type Config struct {
	// Cache answers the token requests. Required.
	Cache TokenCache

	// Providers are the providers a request may name with ?provider=. Nil
	// means ["genesys"]; an empty non-nil slice is refused. A request
	// without ?provider= asks for "genesys" whatever this list holds.
	Providers []string

	// DefaultTenant is the tenant of a request that names none (no ?tenant=,
	// no X-Tenant-ID header). "" means none: such a request gets 400
	// INVALID_REQUEST. It must be a valid tenant ID (ValidTenantID) and, when
	// AllowedTenants is set, one of them.
	DefaultTenant string

	// AllowedTenants, when not empty, are the only tenants served; any other
	// gets 403 TENANT_NOT_ALLOWED. Empty means every valid tenant ID is
	// served. Each must be a valid tenant ID.
	AllowedTenants []string

	// RequireRequestHeader turns on the X-Token-Request: true check (403
	// REQUEST_HEADER_REQUIRED without it). Beware: the zero value, false,
	// means the check is OFF. The contract's default is on; cmd passes the
	// value of -require-request-header, whose default is true.
	RequireRequestHeader bool

	// RequestTimeout bounds how long a caller waits for a token; when it
	// runs out the answer is 504 TIMEOUT, while the shared exchange goes on
	// in the cache and its result is cached. Zero means 15 s; negative is
	// refused.
	RequestTimeout time.Duration

	// Logger receives the request log and panics. Nil means discard.
	Logger *slog.Logger

	// MeterProvider receives token_sidecar.token.requests, the answers by
	// route, status and error code, and token_sidecar.token.request.duration,
	// their latency; and token_sidecar.proxy.retry_buffer.used and .limit,
	// the /proxy/ bodies buffered for 401 retries. Nil means no metrics.
	MeterProvider metric.MeterProvider

	// TracerProvider, when not nil, gives a request that reaches the handler
	// without a span one on demand. cmd wraps the handler in otelhttp, which
	// makes every request's server span, only while spans are recorded:
	// otelhttp would be the largest cost of a cached token. Without it a
	// request still needs a trace context when it goes upstream (so that
	// the Tenant Service and the login receive the caller's trace in
	// traceparent) and when a log line is written about it (trace_id and
	// span_id). The span is started at the first of those, continuing the
	// caller's traceparent (Propagator), and ended after the request log; a
	// cached token answered without a log line starts none. A request that
	// already has a span keeps it. Nil means no spans are started here.
	TracerProvider trace.TracerProvider

	// Propagator reads the caller's trace context for TracerProvider's
	// spans. Nil means W3C trace context (traceparent, tracestate).
	Propagator propagation.TextMapPropagator

	// MetricsTenantLabel adds the tenant to token_sidecar.token.requests
	// (never to the duration histogram). False, the zero value, keeps the
	// cardinality independent of the number of tenants.
	MetricsTenantLabel bool

	// LatencyBuckets are the bucket boundaries, in seconds, of
	// token_sidecar.token.request.duration. Nil leaves them to the meter
	// provider (its views, else the SDK's default, which is sized for
	// milliseconds).
	LatencyBuckets []float64

	// Now is the clock that expires_in and expires_at are computed from.
	// Nil means time.Now.
	Now func() time.Time

	// APITransport sends the /proxy/ requests to the Genesys API, one call
	// per attempt (a 401 retry is a second call); wrap it to trace or meter
	// them (otelhttp.NewTransport). Nil means NewAPITransport().
	APITransport http.RoundTripper

	// APIProxyTimeout bounds one /proxy/ request from its arrival to the
	// last byte of its answer; for those requests it replaces the server's
	// read and write timeouts, which are sized for the token API. Zero
	// means 10 minutes; negative is refused.
	APIProxyTimeout time.Duration

	// APIBodyIdleTimeout is the longest a /proxy/ request body may go
	// without a byte arriving; a body that stalls longer is cut off (400, or
	// the API call fails mid-stream). It keeps a stalled upload from holding
	// its connection for all of APIProxyTimeout. Zero means 10 s; negative
	// is refused.
	APIBodyIdleTimeout time.Duration

	// APIRetryBuffer is the most bytes of request bodies that all /proxy/
	// requests together keep buffered so that they can be sent again after
	// a 401 (each body at most 1 MiB). A body that would take the buffers
	// past it streams to the API instead and is not retried, as a larger
	// body is. Buffers grow only as bytes arrive. Zero means
	// DefaultAPIRetryBuffer (32 MiB); negative means none: only requests
	// without a body are retried.
	APIRetryBuffer int64
}

// NewTokenHandler returns the handler of the token listener: GET /token and
// POST /token/refresh, as shared/docs/contract.md "Token API" describes, with
// JSON errors for everything else. It returns an error for a bad Config: no
// Cache, a malformed default or allowed tenant, a default tenant outside the
// allow-list, an empty provider list or name, a negative RequestTimeout or
// APIProxyTimeout. It also serves /proxy/*, the API proxy of api_proxy.go.
//
// The handler is safe for concurrent use. It does not limit the size or the
// time of reading a request: that is the http.Server's job (cmd), as are
// ReadHeaderTimeout and MaxHeaderBytes. Only /proxy/ reads a request body.
func NewTokenHandler(cfg Config) (http.Handler, error) {
	if cfg.Cache == nil {
		return nil, errors.New("proxy: Config.Cache is required")
	}
	if cfg.RequestTimeout < 0 {
		return nil, errors.New("proxy: Config.RequestTimeout is negative")
	}
	rules, err := newTenantRules(cfg.DefaultTenant, cfg.AllowedTenants, cfg.Providers)
	if err != nil {
		return nil, err
	}
	metrics, err := newRequestMetrics(cfg.MeterProvider, cfg.MetricsTenantLabel, cfg.LatencyBuckets)
	if err != nil {
		return nil, err
	}
	spans := newLazySpans(cfg.TracerProvider, cfg.Propagator)
	h := &tokenHandlers{
		spans:   spans,
		cache:   cfg.Cache,
		rules:   rules,
		timeout: cfg.RequestTimeout,
		now:     cfg.Now,
		logger:  orDiscard(cfg.Logger),
		metrics: metrics,
		bufs:    sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }},
		// Shared, never modified: assigning one of these to a header map
		// saves the slice allocation http.Header.Set would make.
		hdrJSON:    []string{echo.MIMEApplicationJSON},
		hdrNoStore: []string{"no-store"},
		hdrNoCache: []string{"no-cache"},
	}
	h.cached, _ = cfg.Cache.(cachedTokens)
	if h.timeout == 0 {
		h.timeout = defaultRequestTimeout
	}
	if h.now == nil {
		h.now = time.Now
	}
	api, err := newAPIProxy(cfg, rules, h.timeout, h.logger, spans)
	if err != nil {
		return nil, err
	}
	e := newEcho()
	tokenRoutes(e, h, api, cfg.RequireRequestHeader)
	return e, nil
}

// orDiscard returns l, or a logger that drops everything when l is nil.
func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// tokenHandlers serve the token API. Immutable after NewTokenHandler.
type tokenHandlers struct {
	spans   *lazySpans // nil: none started here
	cache   TokenCache
	cached  cachedTokens // cache's fast path; nil when it has none
	rules   *tenantRules
	timeout time.Duration
	now     func() time.Time
	logger  *slog.Logger
	metrics *requestMetrics // nil: no metrics
	bufs    sync.Pool       // *[]byte for response bodies

	hdrJSON, hdrNoStore, hdrNoCache []string
}

// getToken serves GET /token.
func (h *tokenHandlers) getToken(c echo.Context) error { return h.serve(c, false) }

// refreshToken serves POST /token/refresh.
func (h *tokenHandlers) refreshToken(c echo.Context) error { return h.serve(c, true) }

// serve resolves the key, asks the cache within the request timeout and
// writes the token. A token the cache holds is taken without the timeout
// (cachedTokens), which only a wait needs. A bool rather than a method value picks Get or Refresh,
// as a method value would allocate on every request.
func (h *tokenHandlers) serve(c echo.Context, refresh bool) error {
	req := c.Request()
	key, err := h.rules.key(req)
	if err != nil {
		return err
	}
	var tok cache.Token
	hit := false
	if !refresh && h.cached != nil {
		tok, hit = h.cached.Cached(req.Context(), key)
	}
	if !hit {
		// Going upstream: the calls carry the request's trace.
		ctx, cancel := context.WithTimeout(h.spans.context(c), h.timeout)
		if refresh {
			tok, err = h.cache.Refresh(ctx, key, refusedToken(req))
		} else {
			tok, err = h.cache.Get(ctx, key)
		}
		cancel()
	}
	if err != nil {
		return &apiError{tenant: key.Tenant, provider: key.Provider, err: err}
	}
	if tok.AccessToken == "" {
		return &apiError{code: codeInternal, tenant: key.Tenant, provider: key.Provider,
			err: errors.New("proxy: cache returned an empty access token without an error")}
	}
	if h.logger.Enabled(req.Context(), slog.LevelDebug) || (h.metrics != nil && h.metrics.tenantLabel) {
		c.Set(logTenantKey, key.Tenant)
	}
	return h.writeToken(c.Response(), tok)
}

// refusedToken is the token a POST /token/refresh names as refused, in
// Authorization: Bearer <token>; "" when it names none (the cache then takes
// the token it holds). The value is never logged.
func refusedToken(req *http.Request) string {
	v := req.Header.Get(echo.HeaderAuthorization)
	if len(v) > len("Bearer ") && strings.EqualFold(v[:len("Bearer ")], "Bearer ") {
		return strings.TrimSpace(v[len("Bearer "):])
	}
	return ""
}

// writeToken writes the 200 answer. The body is built by hand into a pooled
// buffer: this is the cached-token path, and encoding/json would allocate.
func (h *tokenHandlers) writeToken(w *echo.Response, tok cache.Token) error {
	hdr := w.Header()
	hdr[echo.HeaderContentType] = h.hdrJSON
	hdr[echo.HeaderCacheControl] = h.hdrNoStore
	hdr["Pragma"] = h.hdrNoCache
	bp := h.bufs.Get().(*[]byte)
	b := appendTokenJSON((*bp)[:0], tok, h.now())
	w.WriteHeader(http.StatusOK)
	// A write error means the caller has gone; the answer is committed and
	// there is nobody left to tell.
	_, _ = w.Write(b)
	if cap(b) <= maxPooledBody {
		*bp = b
		h.bufs.Put(bp)
	}
	return nil
}

// maxPooledBody keeps the buffer of an unusually long token out of the pool.
const maxPooledBody = 16 << 10
