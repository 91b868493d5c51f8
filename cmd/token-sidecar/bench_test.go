package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/proxy"
	"github.com/token-sidecar/token-sidecar/upstream"
)

// staticSource hands out one day-long token.
type staticSource struct{}

func (staticSource) Fetch(context.Context, cache.FetchRequest) (cache.Token, error) {
	return cache.Token{AccessToken: "bench-token", TokenType: "bearer",
		ExpiresAt: time.Now().Add(24 * time.Hour), Lifetime: 24 * time.Hour}, nil
}

// BenchmarkHandlerTokenHit measures a cached GET /token through the token
// listener's handler as run wires it — a real cache, the metrics, the
// request log at info — for each telemetry setting:
//
//   - no-export: no OTEL_* variable, the default (no otelhttp);
//   - tracing: a span processor, so otelhttp makes spans but no metrics;
//   - otelhttp-metrics: the handler wrapped as before (wrapHandler, with
//     http.server.request.duration), for comparison.
func BenchmarkHandlerTokenHit(b *testing.B) {
	for _, bc := range []struct {
		name  string
		spans bool
		wrap  func(*telemetry, http.Handler) http.Handler
	}{
		{"no-export", false, (*telemetry).wrapTokenHandler},
		{"tracing", true, (*telemetry).wrapTokenHandler},
		{"otelhttp-metrics", false, func(t *telemetry, h http.Handler) http.Handler { return t.wrapHandler(h, "token") }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			logger := slog.New(newTraceLogHandler(slog.NewJSONHandler(io.Discard, nil)))
			var opts telemetryOptions
			if bc.spans {
				opts.spanProcessors = []sdktrace.SpanProcessor{tracetest.NewSpanRecorder()}
			}
			tel, err := newTelemetry(context.Background(), func(string) string { return "" }, logger, opts)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = tel.shutdown(context.Background()) })
			tokens, err := cache.New(cache.Config{Source: staticSource{}, Logger: logger,
				MeterProvider: tel.meter(), TracerProvider: tel.tracerProvider})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(tokens.Close)
			inner, err := proxy.NewTokenHandler(proxy.Config{Cache: tokens, RequireRequestHeader: true,
				Logger: logger, MeterProvider: tel.meter(), LatencyBuckets: upstream.LatencyBuckets})
			if err != nil {
				b.Fatal(err)
			}
			h := bc.wrap(tel, inner)
			r := httptest.NewRequest(http.MethodGet, "/token?tenant=acme", nil)
			r.Header.Set("X-Token-Request", "true")
			serve := func() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
			serve() // the miss
			b.ReportAllocs()
			for b.Loop() {
				serve()
			}
		})
	}
}
