package proxy

import (
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"
)

// AdminConfig configures NewAdminHandler. Its zero value is usable.
type AdminConfig struct {
	// Ready reports whether the sidecar is ready to serve tokens (both
	// listeners serving, not shutting down); it must be safe for concurrent
	// use and fast. Nil means always ready.
	Ready func() bool
	// Metrics serves GET /metrics (Prometheus text). Nil means /metrics is
	// 404 NOT_FOUND.
	Metrics http.Handler
	// Logger receives the request log (debug for the probes' 200s) and
	// panics. Nil means discard.
	Logger *slog.Logger
}

// NewAdminHandler returns the handler of the admin listener:
//
//	GET|HEAD /healthz  200 {"status":"ok"} while the process runs
//	GET|HEAD /readyz   200 {"status":"ready"}, or 503 {"status":"not ready"}
//	GET      /metrics  cfg.Metrics
//
// Errors (unknown path, wrong method) are the token API's JSON errors. The
// handler is safe for concurrent use.
func NewAdminHandler(cfg AdminConfig) http.Handler {
	a := &adminHandlers{ready: cfg.Ready, metrics: cfg.Metrics, logger: orDiscard(cfg.Logger)}
	e := newEcho()
	adminRoutes(e, a)
	return e
}

// adminHandlers serve the admin endpoints. Immutable after NewAdminHandler.
type adminHandlers struct {
	ready   func() bool
	metrics http.Handler
	logger  *slog.Logger
}

func (a *adminHandlers) healthz(c echo.Context) error {
	return writeStatus(c, http.StatusOK, "ok")
}

func (a *adminHandlers) readyz(c echo.Context) error {
	if a.ready != nil && !a.ready() {
		return writeStatus(c, http.StatusServiceUnavailable, "not ready")
	}
	return writeStatus(c, http.StatusOK, "ready")
}

// writeStatus writes a probe answer, {"status":"…"}, never cached.
func writeStatus(c echo.Context, code int, status string) error {
	c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
	return c.JSON(code, map[string]string{"status": status})
}
