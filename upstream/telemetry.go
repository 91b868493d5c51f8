package upstream

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// instrumentationName names the meter and the tracer of this package.
const instrumentationName = "github.com/token-sidecar/token-sidecar/upstream"

// LatencyBuckets are the bucket boundaries, in seconds, of the latency
// histograms: from a loopback answer (0.5 ms) to an attempt timeout (30 s).
var LatencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// Metric attribute keys. The tenant is a label only with the tenant label on,
// and only on counters.
const (
	attrUpstream = attribute.Key("upstream")
	attrOutcome  = attribute.Key("outcome")
	attrReason   = attribute.Key("reason")
	attrTenant   = attribute.Key("tenant")
	attrHost     = attribute.Key("host")
	attrState    = attribute.Key("state")
)

// Span attribute keys.
const (
	spanAttrUpstream = attribute.Key("token_sidecar.upstream")
	spanAttrTenant   = attribute.Key("token_sidecar.tenant")
	spanAttrProvider = attribute.Key("token_sidecar.provider")
	spanAttrRegion   = attribute.Key("token_sidecar.region")
	spanAttrAttempts = attribute.Key("token_sidecar.upstream.attempts")
	spanAttrHost     = attribute.Key("token_sidecar.upstream.host")
)

// outcomeOK is the outcome of a successful call or attempt.
const outcomeOK = "ok"

// telemetryConfig are the telemetry fields both client configs share; each
// config documents them.
type telemetryConfig struct {
	tracerProvider trace.TracerProvider
	meterProvider  metric.MeterProvider
	propagator     propagation.TextMapPropagator
	tenantLabel    bool
}

// instrumented reports whether the HTTP stack is wrapped at all: without a
// tracer provider or a propagator there is nothing to do per attempt.
func (c telemetryConfig) instrumented() bool {
	return c.tracerProvider != nil || c.propagator != nil
}

// telemetry holds one client's tracer and instruments. It is immutable and
// safe for concurrent use.
type telemetry struct {
	upstream    string
	callSpan    string
	tracer      trace.Tracer
	tenantLabel bool

	requests        metric.Int64Counter
	requestDuration metric.Float64Histogram
	attemptDuration metric.Float64Histogram
	retries         metric.Int64Counter

	circuitStateGauge  metric.Int64Gauge
	circuitTransitions metric.Int64Counter
	circuitRejected    metric.Int64Counter
}

func newTelemetry(upstream, callSpan string, cfg telemetryConfig) (*telemetry, error) {
	tp, mp := cfg.tracerProvider, cfg.meterProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	t := &telemetry{upstream: upstream, callSpan: callSpan, tracer: tp.Tracer(instrumentationName), tenantLabel: cfg.tenantLabel}
	var errs [7]error
	t.requests, errs[0] = m.Int64Counter("token_sidecar.upstream.requests",
		metric.WithUnit("{request}"),
		metric.WithDescription("Calls to an upstream, retries included, by upstream and outcome (ok or the contract error code)."))
	t.requestDuration, errs[1] = m.Float64Histogram("token_sidecar.upstream.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of a call to an upstream, all attempts and retry waits included."),
		metric.WithExplicitBucketBoundaries(LatencyBuckets...))
	t.attemptDuration, errs[2] = m.Float64Histogram("token_sidecar.upstream.attempt.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of one HTTP attempt to an upstream, by outcome (ok or the failure reason, e.g. http_503, timeout)."),
		metric.WithExplicitBucketBoundaries(LatencyBuckets...))
	t.retries, errs[3] = m.Int64Counter("token_sidecar.upstream.retries",
		metric.WithUnit("{retry}"),
		metric.WithDescription("Retries scheduled after a transient failure, by upstream and reason."))
	t.circuitStateGauge, errs[4] = m.Int64Gauge("token_sidecar.upstream.circuit.state",
		metric.WithUnit("{state}"),
		metric.WithDescription("State of the circuit breaker of an upstream host: 0 closed, 1 half-open, 2 open."))
	t.circuitTransitions, errs[5] = m.Int64Counter("token_sidecar.upstream.circuit.transitions",
		metric.WithUnit("{transition}"),
		metric.WithDescription("State changes of the circuit breaker of an upstream host, by the state entered (closed, half-open, open)."))
	t.circuitRejected, errs[6] = m.Int64Counter("token_sidecar.upstream.circuit.rejected",
		metric.WithUnit("{call}"),
		metric.WithDescription("Calls refused without an attempt because the circuit breaker of the upstream host was open."))
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	return t, nil
}

// wrapTransport puts an otelhttp transport over base, so that every attempt
// is an HTTP client span that carries the trace context to the upstream.
// otelhttp records no header, so the Authorization header never reaches a
// span. Its HTTP client metrics are turned off: the attempt histogram,
// labelled by upstream, covers them. urlTemplate names the spans
// ("GET /tenants/{tenant}/credentials/{provider}").
func wrapTransport(base http.RoundTripper, cfg telemetryConfig, urlTemplate string) http.RoundTripper {
	tp := cfg.tracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	prop := cfg.propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	return otelhttp.NewTransport(base,
		otelhttp.WithTracerProvider(tp),
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithPropagators(prop),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + urlTemplate
		}),
	)
}

// call is one traced and measured upstream call.
type call struct {
	t      *telemetry
	span   trace.Span
	start  time.Time
	tenant string
}

// begin starts a call's span; the caller must call end with the call's
// error. attrs are extra span attributes (provider, region); never a
// credential.
func (t *telemetry) begin(ctx context.Context, tenant string, attrs ...attribute.KeyValue) (context.Context, *call) {
	attrs = append(attrs, spanAttrUpstream.String(t.upstream), spanAttrTenant.String(tenant))
	ctx, span := t.tracer.Start(ctx, t.callSpan, trace.WithAttributes(attrs...))
	return ctx, &call{t: t, span: span, start: time.Now(), tenant: tenant}
}

// end counts the call and ends its span, with an error status carrying the
// error code when err is not nil.
func (c *call) end(err error) {
	outcome := outcomeOK
	if err != nil {
		outcome = errorOutcome(err)
		c.span.SetAttributes(semconv.ErrorTypeKey.String(outcome))
		// Error texts of this package are free of secrets by design.
		c.span.RecordError(err)
		c.span.SetStatus(codes.Error, outcome)
	}
	c.span.End()
	ctx := context.Background()
	c.t.requestDuration.Record(ctx, time.Since(c.start).Seconds(),
		metric.WithAttributes(attrUpstream.String(c.t.upstream), attrOutcome.String(outcome)))
	c.t.requests.Add(ctx, 1, metric.WithAttributeSet(c.t.counterSet(c.tenant, attrOutcome.String(outcome))))
}

// counterSet is a counter's attribute set: the upstream, kv and, with the
// tenant label on, the tenant.
func (t *telemetry) counterSet(tenant string, kv attribute.KeyValue) attribute.Set {
	if t.tenantLabel {
		return attribute.NewSet(attrUpstream.String(t.upstream), kv, attrTenant.String(tenant))
	}
	return attribute.NewSet(attrUpstream.String(t.upstream), kv)
}

// attempt records one attempt's duration and outcome.
func (t *telemetry) attempt(o *outcome, d time.Duration) {
	t.attemptDuration.Record(context.Background(), d.Seconds(),
		metric.WithAttributes(attrUpstream.String(t.upstream), attrOutcome.String(attemptOutcome(o))))
}

// retry counts a scheduled retry and adds an event "retry" to the call's
// span (the span in ctx).
func (t *telemetry) retry(ctx context.Context, tenant string, o *outcome, attempt int, delay time.Duration) {
	reason := attemptOutcome(o)
	t.retries.Add(ctx, 1, metric.WithAttributeSet(t.counterSet(tenant, attrReason.String(reason))))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		attrs := []attribute.KeyValue{
			attribute.Int("token_sidecar.upstream.attempt", attempt),
			attrReason.String(reason),
			attribute.Float64("token_sidecar.retry.delay_seconds", delay.Seconds()),
		}
		if o != nil && o.status != 0 {
			attrs = append(attrs, semconv.HTTPResponseStatusCode(o.status))
		}
		span.AddEvent("retry", trace.WithAttributes(attrs...))
	}
}

// circuitStateValue orders the states by severity, so that an alert can
// test "== 2" for open and a graph reads naturally.
func circuitStateValue(s circuitbreaker.State) int64 {
	switch s {
	case circuitbreaker.OpenState:
		return 2
	case circuitbreaker.HalfOpenState:
		return 1
	}
	return 0
}

// circuitState records that host's breaker entered state s; the first
// record for a host (closed, at creation) is not a transition.
func (t *telemetry) circuitState(host string, s circuitbreaker.State) {
	ctx := context.Background()
	set := attribute.NewSet(attrUpstream.String(t.upstream), attrHost.String(host))
	t.circuitStateGauge.Record(ctx, circuitStateValue(s), metric.WithAttributeSet(set))
}

// circuitTransition counts host's breaker entering state s.
func (t *telemetry) circuitTransition(host string, s circuitbreaker.State) {
	t.circuitTransitions.Add(context.Background(), 1, metric.WithAttributes(
		attrUpstream.String(t.upstream), attrHost.String(host), attrState.String(s.String())))
}

// rejected counts a call refused by host's open breaker and marks the
// call's span (the span in ctx).
func (t *telemetry) rejected(ctx context.Context, host string) {
	t.circuitRejected.Add(ctx, 1, metric.WithAttributes(attrUpstream.String(t.upstream), attrHost.String(host)))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("circuit_open", trace.WithAttributes(spanAttrHost.String(host)))
	}
}

// setAttempts records on the call's span how many attempts were made.
func setAttempts(ctx context.Context, n int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(spanAttrAttempts.Int(n))
	}
}

// errorOutcome is the outcome label of a failed call: its contract code.
func errorOutcome(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != "" {
		return string(e.Code)
	}
	return "INTERNAL_ERROR"
}

// attemptOutcome is the outcome label of one attempt: "ok", or its failure
// reason in snake case ("http_503", "timeout", "network_error",
// "rate_limit_exceeded", "http_400_invalid_grant"). Reasons are fixed words,
// an HTTP status and an OAuth error word of a fixed vocabulary, so the label
// has a bounded set of values and never holds upstream text.
func attemptOutcome(o *outcome) string {
	if o == nil {
		return "error"
	}
	if o.res.ok() {
		return outcomeOK
	}
	if o.res.reason == "" {
		return "error"
	}
	return strings.ReplaceAll(strings.ToLower(o.res.reason), " ", "_")
}
