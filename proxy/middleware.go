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

// requestLog logs one line per request and answers every error a later
// handler returns (so that it knows the status it logs): debug for 1xx–3xx
// and for a caller that went away, info for 4xx, warn for 5xx, error for
// INTERNAL_ERROR. Fields: method, route (the route pattern, never the URL:
// query strings may hold anything), status, duration, tenant, code, and for
// errors from the cache the error text (upstream errors are free of secrets
// by contract). It never logs request headers other than the tenant, nor
// bodies.
//
// It is also the listener's telemetry middleware: it names the request after
// its route (nameRequest) and, with rl.metrics, counts the answer and records
// its latency, from its arrival to the handler's return, before the error
// is written. One middleware rather than two: echo builds the middleware
// chain on every request, one allocation per middleware, and the clock is
// read once for both.
//
// When the level is disabled it builds no attributes, so the cached-token
// path pays one Enabled call. When it logs, the line carries the request's
// trace: rl.spans starts a span, dated from the request's arrival, if the
// request has none (nil spans: none is started). The span it started, here
// or in a handler, ends when the request does, a panic included.
func requestLog(rl *requestLogger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			logger := rl.logger
			start := time.Now()
			defer rl.spans.end(c, c.Request())
			nameRequest(c)
			err := next(c)
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
	}
}

// requestLogger is what requestLog and recoverPanic log and measure with.
// One pointer rather than its fields: echo builds the middleware chain on
// every request, and each word a closure captures is allocated with it.
type requestLogger struct {
	logger  *slog.Logger
	spans   *lazySpans      // nil: no span is started for a log line
	metrics *requestMetrics // nil: answers are not counted
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

// recoverPanic turns a panic in a later handler into a 500 INTERNAL_ERROR
// answer and an error log line with the panic value and stack. It logs
// nothing of the request but method and route: headers may hold tokens.
// http.ErrAbortHandler is re-panicked, as net/http expects.
func recoverPanic(rl *requestLogger) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) (err error) {
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
			return next(c)
		}
	}
}

// requireRequestHeader refuses, with 403 REQUEST_HEADER_REQUIRED, every
// request without exactly one header X-Token-Request whose value is exactly
// "true" (the header's name is matched without regard to case, as HTTP
// wants; its value is not: "TRUE" is refused like any other value, as the
// contract says). Like a cloud metadata server's Metadata-Flavor, it stops
// a server-side request forgery from reaching the token listener through an
// app that can be made to fetch an arbitrary URL but not to set headers.
// It runs before anything else looks at the request, on every route,
// unknown paths included.
func requireRequestHeader(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if v := c.Request().Header[headerTokenRequest]; len(v) != 1 || v[0] != "true" {
			return &apiError{code: codeRequestHeaderRequired}
		}
		return next(c)
	}
}
