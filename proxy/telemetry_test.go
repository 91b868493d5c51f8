package proxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/token-sidecar/token-sidecar/cache"
)

// readMetrics collects reader as "name{k=v,…}" → counter sum or histogram
// count.
func readMetrics(t *testing.T, reader sdkmetric.Reader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	key := func(name string, set attribute.Set) string {
		var kv []string
		for _, a := range set.ToSlice() {
			switch a.Key {
			case "http.route", "http.response.status_code", "error.type", "tenant":
				kv = append(kv, string(a.Key)+"="+a.Value.Emit())
			}
		}
		sort.Strings(kv)
		return name + "{" + strings.Join(kv, ",") + "}"
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] += float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] += float64(p.Count)
				}
			}
		}
	}
	return out
}

func notFoundCache() *fakeCache {
	return &fakeCache{get: func(_ context.Context, key cache.Key) (cache.Token, error) {
		if key.Tenant == "gone" {
			return cache.Token{}, &codedError{code: codeCredentialsNotFound}
		}
		return testToken(), nil
	}}
}

func TestTokenRequestsAreCountedByRouteStatusAndCode(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	h := newTestHandler(t, notFoundCache(), func(c *Config) { c.MeterProvider = mp })

	serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme"))
	serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme"))
	serve(h, tokenRequest(http.MethodGet, "/token?tenant=gone"))
	serve(h, tokenRequest(http.MethodPost, "/token/refresh?tenant=acme"))
	serve(h, httptest.NewRequest(http.MethodGet, "/token?tenant=acme", nil)) // no header
	serve(h, tokenRequest(http.MethodGet, "/nowhere"))
	serve(h, tokenRequest(http.MethodDelete, "/token"))

	got := readMetrics(t, reader)
	want := map[string]float64{
		"token_sidecar.token.requests{http.response.status_code=200,http.route=/token}":                                    2,
		"token_sidecar.token.requests{error.type=CREDENTIALS_NOT_FOUND,http.response.status_code=404,http.route=/token}":   1,
		"token_sidecar.token.requests{http.response.status_code=200,http.route=/token/refresh}":                            1,
		"token_sidecar.token.requests{error.type=REQUEST_HEADER_REQUIRED,http.response.status_code=403,http.route=/token}": 1,
		"token_sidecar.token.requests{error.type=NOT_FOUND,http.response.status_code=404}":                                 1,
		"token_sidecar.token.requests{error.type=METHOD_NOT_ALLOWED,http.response.status_code=405,http.route=/token}":      1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s = %v", k, got[k])
		}
	}
}

func TestTokenRequestsTenantLabel(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	h := newTestHandler(t, notFoundCache(), func(c *Config) { c.MeterProvider, c.MetricsTenantLabel = mp, true })
	serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme"))
	serve(h, tokenRequest(http.MethodGet, "/token?tenant=gone"))
	got := readMetrics(t, reader)
	for _, k := range []string{
		"token_sidecar.token.requests{http.response.status_code=200,http.route=/token,tenant=acme}",
		"token_sidecar.token.requests{error.type=CREDENTIALS_NOT_FOUND,http.response.status_code=404,http.route=/token,tenant=gone}",
	} {
		if got[k] != 1 {
			t.Errorf("%s = %v, want 1 (all: %v)", k, got[k], got)
		}
	}
}

// TestRouteNamesOtelhttpSpansAndMetrics wraps the handler the way cmd does
// and checks that the route middleware names the server span and labels
// otelhttp's duration histogram, and that the caller's traceparent is
// continued.
func TestRouteNamesOtelhttpSpansAndMetrics(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	h := otelhttp.NewHandler(newTestHandler(t, &fakeCache{}, nil), "token",
		otelhttp.WithTracerProvider(tp), otelhttp.WithMeterProvider(mp), otelhttp.WithPropagators(propagation.TraceContext{}))

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r := tokenRequest(http.MethodGet, "/token?tenant=acme")
	r.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	decodeToken(t, serve(h, r))
	serve(h, tokenRequest(http.MethodGet, "/nowhere"))

	ended := spans.Ended()
	if len(ended) != 2 {
		t.Fatalf("%d spans, want 2", len(ended))
	}
	s := ended[0]
	if s.Name() != "GET /token" || s.SpanContext().TraceID().String() != traceID {
		t.Errorf("span %q in trace %s; want GET /token in the caller's trace", s.Name(), s.SpanContext().TraceID())
	}
	route := ""
	for _, a := range s.Attributes() {
		if a.Key == "http.route" {
			route = a.Value.AsString()
		}
	}
	if route != "/token" {
		t.Errorf("http.route = %q, want /token", route)
	}
	if ended[1].Name() != "GET" {
		t.Errorf("unknown path span %q, want GET (no route)", ended[1].Name())
	}
	got := readMetrics(t, reader)
	if k := "http.server.request.duration{http.response.status_code=200,http.route=/token}"; got[k] != 1 {
		t.Errorf("%s = %v, want 1 (all: %v)", k, got[k], got)
	}
}

// BenchmarkTokenHitInstrumented is BenchmarkTokenHit with telemetry as cmd
// runs it when no exporter is configured: the answer counter on, and the
// otelhttp server wrapper with a tracer that records nothing but still gives
// every request IDs for its log lines. Compare with BenchmarkTokenHit for the
// cost of telemetry on the cached-token path.
func BenchmarkTokenHitInstrumented(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	inner, err := NewTokenHandler(Config{Cache: &hitCache{tok: testToken()}, RequireRequestHeader: true,
		Now: func() time.Time { return testNow }, MeterProvider: mp})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"counter", inner},
		{"counter+otelhttp", otelhttp.NewHandler(inner, "token", otelhttp.WithTracerProvider(tp),
			otelhttp.WithMeterProvider(mp), otelhttp.WithPropagators(propagation.TraceContext{}))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := tokenRequest(http.MethodGet, "/token?tenant=acme&provider=genesys")
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				bc.h.ServeHTTP(rec, r)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
			}
		})
	}
}
