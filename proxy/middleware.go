package proxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/trace"
)

// headerTokenRequest is the anti-SSRF header every token-listener request
// carries (canonical form of X-Token-Request).
const headerTokenRequest = "X-Token-Request"

// logTenantKey is the echo context key under which a handler leaves the tenant
// of a successful request for the request log.
const logTenantKey = "proxy.tenant"

// requestLogger is a listener's only middleware (middleware). Per request,
// outside in: the request log, which also writes every error answer so that
// it can log the status, and the telemetry; panic recovery; and, with
// requireHeader, the X-Token-Request check.
//
// It logs one line per request: debug for 1xx–3xx and for a caller that
// went away, info for 4xx, warn for 5xx, error for INTERNAL_ERROR. Fields:
// method, route (the route pattern, never the URL: query strings may hold
// anything), status, duration, tenant, code, and for errors from the cache
// the error text (upstream errors are free of secrets by contract). It
// never logs request headers other than the tenant, nor bodies.
//
// It names the request after its route (nameRequest) and, with metrics,
// counts the answer and records its latency, from its arrival to the
// handler's return, before the error is written. The clock is read once
// for both.
//
// When the level is disabled it builds no attributes, so the cached-token
// path pays one Enabled call. When it logs, the line carries the request's
// trace: spans starts a span, dated from the request's arrival, if the
// request has none (nil spans: none is started). The span it started, here
// or in a handler, ends when the request does, a panic included.
type requestLogger struct {
	logger        *slog.Logger
	spans         *lazySpans      // nil: no span is started for a log line
	metrics       *requestMetrics // nil: answers are not counted
	requireHeader bool            // false: no X-Token-Request check

	handle echo.HandlerFunc // serve, as a func value made once
}

func newRequestLogger(logger *slog.Logger, spans *lazySpans, metrics *requestMetrics, requireHeader bool) *requestLogger {
	rl := &requestLogger{logger: logger, spans: spans, metrics: metrics, requireHeader: requireHeader}
	rl.handle = rl.serve
	return rl
}

// middleware is the echo middleware of rl. It must be the listener's only
// middleware: it ignores next and runs the route's handler through
// c.Handler(), which next then is. echo builds the middleware chain on
// every request, and a closure over next would be one allocation per
// request; rl.handle is made once.
func (rl *requestLogger) middleware(echo.HandlerFunc) echo.HandlerFunc { return rl.handle }

// serve logs, names and measures the request around run.
func (rl *requestLogger) serve(c echo.Context) error {
	logger := rl.logger
	start := time.Now()
	defer rl.spans.end(c, c.Request())
	nameRequest(c)
	err := rl.run(c)
	if rl.metrics != nil {
		rl.metrics.count(c, err, start)
	}
	req := c.Request()
	ctx := req.Context()
	level := slog.LevelDebug
	var p problem
	if err != nil {
		c.Error(err)
		p = classify(err)
		switch {
		case p.code == codeInternal:
			level = slog.LevelError
		case p.code == codeTimeout && ctx.Err() != nil:
			// The caller went away: its business, not ours.
		case p.status >= 500:
			level = slog.LevelWarn
		default:
			level = slog.LevelInfo
		}
	}
	if !logger.Enabled(ctx, level) {
		return nil
	}
	ctx = rl.spans.context(c, trace.WithTimestamp(start))
	status := c.Response().Status
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs,
		slog.String("method", req.Method),
		slog.String("route", c.Path()),
		slog.Int("status", status),
		slog.Duration("duration", time.Since(start)),
	)
	tenant := p.tenant
	if err == nil {
		tenant, _ = c.Get(logTenantKey).(string)
	}
	if tenant != "" {
		attrs = append(attrs, slog.String("tenant", tenant))
	}
	if err != nil {
		attrs = append(attrs, slog.String("code", p.code))
		if cause := causeOf(err); cause != nil {
			attrs = append(attrs, slog.String("error", cause.Error()))
		}
	}
	logger.LogAttrs(ctx, level, "request", attrs...)
	return nil
}

// causeOf is the error worth logging behind an answer: the cache's error for
// an apiError around one; nil for a request the proxy or the router refused by
// itself (the code says it all); the error itself otherwise.
func causeOf(err error) error {
	switch e := err.(type) {
	case *apiError:
		return e.err
	case *echo.HTTPError:
		return nil
	}
	return err
}

// run runs the route's handler (c.Handler(), see middleware) after the
// X-Token-Request check, and turns a panic in either into a 500
// INTERNAL_ERROR answer and an error log line with the panic value and
// stack. The line holds nothing of the request but method and route:
// headers may hold tokens. http.ErrAbortHandler is re-panicked, as net/http
// expects.
func (rl *requestLogger) run(c echo.Context) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v == http.ErrAbortHandler {
			panic(v)
		}
		rl.logger.LogAttrs(rl.spans.context(c), slog.LevelError, "panic while serving a request",
			slog.String("method", c.Request().Method),
			slog.String("route", c.Path()),
			slog.String("panic", fmt.Sprint(v)),
			slog.String("stack", string(debug.Stack())),
		)
		err = errPanic
	}()
	if rl.requireHeader && !hasRequestHeader(c.Request()) {
		return &apiError{code: codeRequestHeaderRequired}
	}
	return c.Handler()(c)
}

// hasRequestHeader reports whether req carries exactly one header
// X-Token-Request whose value is exactly "true" (the header's name is
// matched without regard to case, as HTTP wants; its value is not: "TRUE"
// is refused like any other value, as the contract says). Without it the
// token listener answers 403 REQUEST_HEADER_REQUIRED. Like a cloud metadata
// server's Metadata-Flavor, it stops a server-side request forgery from
// reaching the token listener through an app that can be made to fetch an
// arbitrary URL but not to set headers. It is checked before anything else
// looks at the request, on every route, unknown paths included.
func hasRequestHeader(req *http.Request) bool {
	v := req.Header[headerTokenRequest]
	return len(v) == 1 && v[0] == "true"
}
