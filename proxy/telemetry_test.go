package proxy

import (
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
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
				kv = append(kv, string(a.Key)+"="+a.Value.String())
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
	// The latency of every answer, with the counter's attributes.
	durations := map[string]float64{}
	for k, v := range want {
		durations["token_sidecar.token.request.duration"+strings.TrimPrefix(k, "token_sidecar.token.requests")] = v
	}
	maps.Copy(want, durations)
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
		// Never the tenant on the histogram.
		"token_sidecar.token.request.duration{http.response.status_code=200,http.route=/token}",
		"token_sidecar.token.request.duration{error.type=CREDENTIALS_NOT_FOUND,http.response.status_code=404,http.route=/token}",
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

// BenchmarkTokenHitInstrumented is BenchmarkTokenHit with the metrics on
// (the answer counter and the duration histogram), as cmd runs it:
//
//   - metrics: no trace exporter configured, no otelhttp (cmd's default);
//   - metrics+otelhttp-spans: a trace exporter configured, otelhttp for the
//     server spans but without its metrics (here with a tracer that records
//     nothing, to show otelhttp's own cost);
//   - metrics+otelhttp: otelhttp with its http.server.request.duration, as
//     cmd used to wrap the token listener, for comparison.
//
// Compare with BenchmarkTokenHit for the cost of telemetry on the
// cached-token path.
func BenchmarkTokenHitInstrumented(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	inner, err := NewTokenHandler(Config{Cache: &hitCache{tok: testToken()}, RequireRequestHeader: true,
		Now: func() time.Time { return testNow }, MeterProvider: mp, LatencyBuckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01}})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{
		{"metrics", inner},
		{"metrics+otelhttp-spans", otelhttp.NewHandler(inner, "token", otelhttp.WithTracerProvider(tp),
			otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()), otelhttp.WithPropagators(propagation.TraceContext{}))},
		{"metrics+otelhttp", otelhttp.NewHandler(inner, "token", otelhttp.WithTracerProvider(tp),
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

// TestTokenRequestDurationAllocatesNothing: a repeated answer is counted and
// timed with the prepared options of the copy-on-write map.
func TestTokenRequestDurationAllocatesNothing(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	m, err := newRequestMetrics(mp, false, []float64{0.001, 0.01})
	if err != nil {
		t.Fatal(err)
	}
	c := newEcho().NewContext(tokenRequest(http.MethodGet, "/token"), httptest.NewRecorder())
	c.SetPath("/token")
	c.Response().Status = http.StatusOK
	start := time.Now()
	m.count(c, nil, start) // prepares the options
	if n := testing.AllocsPerRun(100, func() { m.count(c, nil, start) }); n != 0 {
		t.Errorf("count allocates %v times per answer, want 0", n)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != "token_sidecar.token.request.duration" {
				continue
			}
			if mt.Unit != "s" {
				t.Errorf("unit %q, want s", mt.Unit)
			}
			h := mt.Data.(metricdata.Histogram[float64])
			// One answer, AllocsPerRun's warm-up run and its 100.
			if len(h.DataPoints) != 1 || h.DataPoints[0].Count != 102 || !slices.Equal(h.DataPoints[0].Bounds, []float64{0.001, 0.01}) {
				t.Errorf("data points %+v, want one with 102 answers and the buckets 0.001, 0.01", h.DataPoints)
			}
			return
		}
	}
	t.Error("no token_sidecar.token.request.duration")
}
