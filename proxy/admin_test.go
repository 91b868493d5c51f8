package proxy

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
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

// TestAdminListenerRecoversAndLogs: the admin listener's middleware, like
// the token listener's, turns a panic in a handler into 500 INTERNAL_ERROR
// with an error line naming the route, re-panics net/http's
// ErrAbortHandler, and writes one request line per answer: debug for a
// probe's 200, info for 404 and 405.
func TestAdminListenerRecoversAndLogs(t *testing.T) {
	logs := &logBuffer{}
	var abort atomic.Bool
	metrics := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		if abort.Load() {
			panic(http.ErrAbortHandler)
		}
		panic("metrics exploded")
	})
	h := NewAdminHandler(AdminConfig{Metrics: metrics,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	lines := func() []map[string]any {
		t.Helper()
		var out []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			out = append(out, m)
		}
		logs.buf.Reset()
		return out
	}

	wantError(t, serve(h, httptest.NewRequest(http.MethodGet, "/metrics", nil)), http.StatusInternalServerError, "INTERNAL_ERROR")
	l := lines()
	if len(l) != 2 || l[0]["msg"] != "panic while serving a request" || l[0]["level"] != "ERROR" || l[0]["route"] != "/metrics" ||
		l[0]["panic"] != "metrics exploded" || l[1]["msg"] != "request" || l[1]["level"] != "ERROR" ||
		l[1]["status"] != float64(500) || l[1]["code"] != "INTERNAL_ERROR" {
		t.Errorf("panic: log lines %v; want the panic line and the request line, both at error", l)
	}

	for _, tc := range []struct {
		method, target, level, route string
		status                       float64
	}{
		{http.MethodGet, "/healthz", "DEBUG", "/healthz", 200},
		{http.MethodHead, "/readyz", "DEBUG", "/readyz", 200},
		{http.MethodGet, "/nope", "INFO", "", 404},
		{http.MethodPost, "/healthz", "INFO", "/healthz", 405},
	} {
		serve(h, httptest.NewRequest(tc.method, tc.target, nil))
		l := lines()
		if len(l) != 1 || l[0]["msg"] != "request" || l[0]["level"] != tc.level || l[0]["method"] != tc.method ||
			l[0]["route"] != tc.route || l[0]["status"] != tc.status {
			t.Errorf("%s %s: log lines %v; want one request line at %s, route %q, status %v", tc.method, tc.target, l, tc.level, tc.route, tc.status)
		}
	}

	abort.Store(true)
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	serve(h, httptest.NewRequest(http.MethodGet, "/metrics", nil))
}
