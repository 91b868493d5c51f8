package upstream

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// telemetryFixture is a pipeline over the fakes whose clients report to a
// span recorder and a manual metric reader.
type telemetryFixture struct {
	*pipelineFixture
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
}

func newTelemetryFixture(t *testing.T, tenantLabel bool) *telemetryFixture {
	f := &telemetryFixture{pipelineFixture: newPipelineFixture(t), spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	f.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(f.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.reader))
	hc := &http.Client{Transport: f.counts}
	f.p.Tenants = newTenantClient(t, f.ts.URL(), func(c *TenantClientConfig) {
		c.HTTPClient, c.Logger, c.Timeout = hc, f.logs.logger(), testTimeout
		c.TracerProvider, c.MeterProvider, c.Propagator, c.MetricsTenantLabel = f.tp, mp, propagation.TraceContext{}, tenantLabel
	})
	f.p.Login = newLoginClient(t, f.login.URL(), func(c *LoginClientConfig) {
		c.HTTPClient, c.Logger, c.Timeout = hc, f.logs.logger(), testTimeout
		c.TracerProvider, c.MeterProvider, c.Propagator, c.MetricsTenantLabel = f.tp, mp, propagation.TraceContext{}, tenantLabel
	})
	return f
}

// metrics reads the counters and histogram counts as "name{k=v,…}" → value.
func (f *telemetryFixture) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	return collectMetrics(t, f.reader)
}

// collectMetrics reads the counters, gauges and histogram counts of reader
// as "name{k=v,…}" → value.
func collectMetrics(t *testing.T, reader *sdkmetric.ManualReader) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	key := func(name string, set attribute.Set) string {
		var kv []string
		for _, a := range set.ToSlice() {
			kv = append(kv, string(a.Key)+"="+a.Value.String())
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
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[key(m.Name, p.Attributes)] = float64(p.Value)
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

func TestTelemetryOfARetriedIssue(t *testing.T) {
	f := newTelemetryFixture(t, false)
	f.ts.Script("acme", "genesys", upstreamtest.Step{Status: http.StatusServiceUnavailable})

	tracer := f.tp.Tracer("test")
	ctx, parent := tracer.Start(context.Background(), "request")
	iss, err := f.p.Issue(ctx, "genesys", "acme")
	parent.End()
	if err != nil {
		t.Fatal(err)
	}

	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range f.spans.Ended() {
		byName[s.Name()] = append(byName[s.Name()], s)
	}
	fetch, exchange := byName["tenant_service.fetch"], byName["genesys_login.exchange"]
	gets, posts := byName["GET /tenants/{tenant}/credentials/{provider}"], byName["POST /oauth/token"]
	if len(fetch) != 1 || len(exchange) != 1 || len(gets) != 2 || len(posts) != 1 {
		t.Fatalf("spans: %v", keys(byName))
	}
	for _, s := range []sdktrace.ReadOnlySpan{fetch[0], exchange[0]} {
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%s is not a child of the request span", s.Name())
		}
	}
	for _, s := range append(gets, posts...) {
		want := fetch[0]
		if strings.HasPrefix(s.Name(), "POST") {
			want = exchange[0]
		}
		if s.Parent().SpanID() != want.SpanContext().SpanID() || s.SpanKind() != trace.SpanKindClient {
			t.Errorf("%s: parent %s kind %s; want a client span under %s", s.Name(), s.Parent().SpanID(), s.SpanKind(), want.Name())
		}
	}
	if ev := fetch[0].Events(); len(ev) != 1 || ev[0].Name != "retry" {
		t.Errorf("tenant_service.fetch events = %v, want one retry", ev)
	} else if attrOf(ev[0].Attributes, "reason") != "http_503" || attrOf(ev[0].Attributes, "http.response.status_code") != "503" {
		t.Errorf("retry event attributes = %v", ev[0].Attributes)
	}
	if got := attrOf(fetch[0].Attributes(), "token_sidecar.upstream.attempts"); got != "2" {
		t.Errorf("attempts attribute = %q, want 2", got)
	}
	if gets[0].Status().Code != codes.Error && gets[1].Status().Code != codes.Error {
		t.Error("the 503 attempt's span has no error status")
	}

	// Both upstreams received the trace context of their attempt's span.
	for _, rec := range append(f.ts.Requests(), f.login.Requests()...) {
		tp := rec.Header.Get("Traceparent")
		if !strings.Contains(tp, parent.SpanContext().TraceID().String()) {
			t.Errorf("%s %s: traceparent %q does not carry the trace", rec.Method, rec.RequestURI, tp)
		}
	}

	// No secret, client ID or token in any span.
	for _, s := range f.spans.Ended() {
		text := fmt.Sprint(s.Name(), s.Attributes(), s.Events(), s.Status(), s.Links())
		assertNoSecrets(t, "span "+s.Name(), text, pipeSecret, pipeID, iss.AccessToken, "Basic ")
	}

	got := f.metrics(t)
	for k, v := range map[string]float64{
		"token_sidecar.upstream.requests{outcome=ok,upstream=tenant_service}":               1,
		"token_sidecar.upstream.requests{outcome=ok,upstream=genesys_login}":                1,
		"token_sidecar.upstream.request.duration{outcome=ok,upstream=tenant_service}":       1,
		"token_sidecar.upstream.attempt.duration{outcome=http_503,upstream=tenant_service}": 1,
		"token_sidecar.upstream.attempt.duration{outcome=ok,upstream=tenant_service}":       1,
		"token_sidecar.upstream.attempt.duration{outcome=ok,upstream=genesys_login}":        1,
		"token_sidecar.upstream.retries{reason=http_503,upstream=tenant_service}":           1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	for k := range got {
		if strings.Contains(k, "tenant=") {
			t.Errorf("%s has a tenant label", k)
		}
	}
}

func TestTelemetryOfAFailedCall(t *testing.T) {
	f := newTelemetryFixture(t, true)
	_, err := f.p.Issue(context.Background(), "genesys", "nobody")
	asError(t, err, CodeCredentialsNotFound)
	var fetch sdktrace.ReadOnlySpan
	for _, s := range f.spans.Ended() {
		if s.Name() == "tenant_service.fetch" {
			fetch = s
		}
	}
	if fetch == nil || fetch.Status().Code != codes.Error || fetch.Status().Description != "CREDENTIALS_NOT_FOUND" {
		t.Fatalf("tenant_service.fetch span %v; want status Error CREDENTIALS_NOT_FOUND", fetch)
	}
	if attrOf(fetch.Attributes(), "error.type") != "CREDENTIALS_NOT_FOUND" {
		t.Errorf("attributes %v lack error.type", fetch.Attributes())
	}
	got := f.metrics(t)
	if k := "token_sidecar.upstream.requests{outcome=CREDENTIALS_NOT_FOUND,tenant=nobody,upstream=tenant_service}"; got[k] != 1 {
		t.Errorf("%s = %v, want 1 (all: %v)", k, got[k], got)
	}
	if k := "token_sidecar.upstream.attempt.duration{outcome=http_404,upstream=tenant_service}"; got[k] != 1 {
		t.Errorf("%s = %v, want 1", k, got[k])
	}
}

func TestNoTelemetryLeavesTheTransportAlone(t *testing.T) {
	c, err := NewTenantClient(TenantClientConfig{BaseURL: "http://127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	rt, ok := c.call.client.Transport.(redactingTransport)
	if !ok {
		t.Fatalf("transport %T; want the redacting transport", c.call.client.Transport)
	}
	if _, ok := rt.base.(*http.Transport); !ok {
		t.Fatalf("transport %T under the redacting one; want the plain clone without telemetry", rt.base)
	}
}

func TestAttemptOutcome(t *testing.T) {
	for reason, want := range map[string]string{
		"HTTP 503": "http_503", "timeout": "timeout", "network error": "network_error",
		"rate limit exceeded": "rate_limit_exceeded", "HTTP 400 invalid_grant": "http_400_invalid_grant", "": "error",
	} {
		if got := attemptOutcome(&outcome{res: result{code: CodeOAuthExchangeFailed, reason: reason}}); got != want {
			t.Errorf("%q → %q, want %q", reason, got, want)
		}
	}
	if got := attemptOutcome(&outcome{res: result{}}); got != "ok" {
		t.Errorf("ok → %q", got)
	}
}

func attrOf(attrs []attribute.KeyValue, key string) string {
	for _, a := range attrs {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
