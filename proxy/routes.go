package proxy

import (
	"io"
	"net/http"

	"github.com/labstack/echo/v4"
)

// This file lists every route of both listeners and the middleware around
// them. Anything not listed answers 404 NOT_FOUND; a listed path with another
// method answers 405 METHOD_NOT_ALLOWED with an Allow header, except OPTIONS,
// which echo answers 204 with the Allow header.

// routeToken is the route of GET /token, the cached-token path.
const routeToken = "/token"

// tokenRoutes registers the token listener's routes on e. Its one
// middleware (requestLogger) is, outside in: the request log (which also
// writes every error answer, so it can log the status), telemetry
// (http.route for otelhttp's span and metric, and the answer counter),
// panic recovery, and the X-Token-Request check when required. It runs for
// unknown paths too: without the header, every request is 403.
func tokenRoutes(e *echo.Echo, h *tokenHandlers, api *apiProxy, requireHeader bool) {
	e.Use(newRequestLogger(h.logger, h.spans, h.metrics, requireHeader).middleware)

	e.GET(routeToken, h.getToken)
	e.POST("/token/refresh", h.refreshToken)
	e.Match(apiProxyMethods, apiProxyRoute, api.serve)
}

// adminRoutes registers the admin listener's routes on e. There is no
// X-Token-Request check here: the callers are the kubelet and Prometheus,
// and nothing here serves a token.
func adminRoutes(e *echo.Echo, a *adminHandlers) {
	e.Use(newRequestLogger(a.logger, nil, nil, false).middleware)

	getOrHead := []string{http.MethodGet, http.MethodHead}
	e.Match(getOrHead, "/healthz", a.healthz)
	e.Match(getOrHead, "/readyz", a.readyz)
	if a.metrics != nil {
		e.GET("/metrics", echo.WrapHandler(a.metrics))
	}
}

// newEcho returns an echo instance without routes, set up for this package:
// no banner, no echo logger output (logs are slog JSON on stderr, and echo's
// own logger writes text to stdout), and the JSON error handler. Its Server
// fields are never used: cmd serves the instance as an http.Handler.
func newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.Logger.SetOutput(io.Discard)
	e.HTTPErrorHandler = handleError
	return e
}
