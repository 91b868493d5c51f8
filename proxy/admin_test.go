package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestAdminEndpoints(t *testing.T) {
	var ready atomic.Bool
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, "token_requests_total 1\n")
	})
	h := NewAdminHandler(AdminConfig{Ready: ready.Load, Metrics: metrics, Logger: slog.New(slog.DiscardHandler)})
	get := func(target string) *httptest.ResponseRecorder {
		// No X-Token-Request: the admin listener does not ask for it.
		return serve(h, httptest.NewRequest(http.MethodGet, target, nil))
	}
	status := func(t *testing.T, rec *httptest.ResponseRecorder, code int, want string) {
		t.Helper()
		var b struct{ Status string }
		if err := json.NewDecoder(rec.Body).Decode(&b); err != nil || rec.Code != code || b.Status != want {
			t.Errorf("got %d %q (%v), want %d %q", rec.Code, b.Status, err, code, want)
		}
		if rec.Header().Get("Cache-Control") != "no-store" {
			t.Error("no Cache-Control: no-store")
		}
	}

	status(t, get("/healthz"), 200, "ok")
	status(t, get("/readyz"), 503, "not ready")
	ready.Store(true)
	status(t, get("/readyz"), 200, "ready")
	if rec := serve(h, httptest.NewRequest(http.MethodHead, "/healthz", nil)); rec.Code != 200 {
		t.Errorf("HEAD /healthz = %d", rec.Code)
	}

	rec := get("/metrics")
	if rec.Code != 200 || rec.Body.String() != "token_requests_total 1\n" {
		t.Errorf("/metrics = %d %q", rec.Code, rec.Body)
	}

	wantError(t, get("/token"), http.StatusNotFound, "NOT_FOUND")
	wantError(t, get("/nope"), http.StatusNotFound, "NOT_FOUND")
	wantError(t, serve(h, httptest.NewRequest(http.MethodPost, "/healthz", nil)), http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED")
}

func TestAdminZeroConfig(t *testing.T) {
	h := NewAdminHandler(AdminConfig{})
	if rec := serve(h, httptest.NewRequest(http.MethodGet, "/readyz", nil)); rec.Code != http.StatusOK {
		t.Errorf("/readyz without Ready = %d, want 200", rec.Code)
	}
	wantError(t, serve(h, httptest.NewRequest(http.MethodGet, "/metrics", nil)), http.StatusNotFound, "NOT_FOUND")
}
