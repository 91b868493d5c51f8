package proxy

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// instrumentationName names the meter of this package.
const instrumentationName = "github.com/token-sidecar/token-sidecar/proxy"

// nameRequest names c's request after its echo route, for the otelhttp
// handler that cmd may wrap around a listener: it sets
// http.Request.Pattern, which otelhttp reads after the handler returns to
// name the server span ("GET /token") and to label
// http.server.request.duration with http.route, and, when the span records,
// sets the span's http.route attribute at once. requestLogger.serve calls
// it first.
//
// Pattern rather than otelhttp's Labeler: the request is the one otelhttp
// handed to echo, and setting a field allocates nothing, where a Labeler
// grows a slice under a mutex on every request. Unknown paths have no route
// and keep the plain span name ("GET").
func nameRequest(c echo.Context) {
	route := c.Path()
	if route == "" {
		return
	}
	req := c.Request()
	req.Pattern = route
	if span := trace.SpanFromContext(req.Context()); span.IsRecording() {
		span.SetAttributes(semconv.HTTPRoute(route))
		span.SetName(req.Method + " " + route)
	}
}

// requestMetrics counts the token listener's answers as
// token_sidecar.token.requests{http.route, http.response.status_code,
// error.type} and records their latency, with the same attributes, as
// token_sidecar.token.request.duration (seconds, Config.LatencyBuckets).
// With tenantLabel the counter, not the histogram, is also labelled with the
// tenant. It is safe for concurrent use.
//
// The duration histogram is the token API's latency metric: cmd does not put
// otelhttp's http.server.request.duration on the token listener, whose cost
// per cached token is several times that of this one.
//
// Without the tenant label the counter is observable: answers are counted in
// an atomic per label set, reported at collection time, so that a cached
// token costs one synchronous measurement here (the duration), not two.
type requestMetrics struct {
	requests    metric.Int64Counter // with tenantLabel only
	duration    metric.Float64Histogram
	tenantLabel bool

	// opts is a copy-on-write map from an answer's labels to its prepared
	// options: a repeated answer (every cached token) is counted and timed
	// without allocating. The key space is small and bounded: routes ×
	// statuses × codes.
	opts atomic.Pointer[map[answerLabels]answerOptions]
	mu   sync.Mutex

	// hit are the options of a 200 of GET /token, the answer of a cached
	// token, prepared at start (they are also in opts): that answer skips
	// the map lookup.
	hit answerOptions
}

// hitLabels are the labels of requestMetrics.hit.
var hitLabels = answerLabels{route: routeToken, status: http.StatusOK}

// answerOptions are the measurement options of one answer: its attribute
// set, as an option of the histogram, and its count (the counter without
// the tenant label). A pointer, so that the copies of the map share it.
type answerOptions struct {
	set    attribute.Set
	count  *atomic.Int64
	record []metric.RecordOption
}

func newAnswerOptions(set attribute.Set) answerOptions {
	return answerOptions{set: set, count: new(atomic.Int64), record: []metric.RecordOption{metric.WithAttributeSet(set)}}
}

type answerLabels struct {
	route  string
	status int
	code   string
}

// newRequestMetrics returns nil when mp is nil: no metrics.
func newRequestMetrics(mp metric.MeterProvider, tenantLabel bool, buckets []float64) (*requestMetrics, error) {
	if mp == nil {
		return nil, nil
	}
	m := &requestMetrics{tenantLabel: tenantLabel}
	empty := map[answerLabels]answerOptions{}
	m.opts.Store(&empty)
	meter := mp.Meter(instrumentationName)
	const name, desc = "token_sidecar.token.requests", "Answers of the token listener by route, HTTP status and error code (error.type, absent on success)."
	var err error
	if tenantLabel {
		m.requests, err = meter.Int64Counter(name, metric.WithUnit("{request}"), metric.WithDescription(desc))
	} else {
		_, err = meter.Int64ObservableCounter(name, metric.WithUnit("{request}"), metric.WithDescription(desc),
			metric.WithInt64Callback(m.observe))
	}
	if err != nil {
		return nil, err
	}
	hopts := []metric.Float64HistogramOption{metric.WithUnit("s"),
		metric.WithDescription("Latency of the token listener's answers, from routing to the handler's return, by route, HTTP status and error code (error.type, absent on success).")}
	if buckets != nil {
		hopts = append(hopts, metric.WithExplicitBucketBoundaries(buckets...))
	}
	m.duration, err = meter.Float64Histogram("token_sidecar.token.request.duration", hopts...)
	if err != nil {
		return nil, err
	}
	m.hit = m.options(hitLabels)
	return m, nil
}

// observe reports the answers counted per label set (without the tenant
// label), each from its first answer on.
func (m *requestMetrics) observe(_ context.Context, obs metric.Int64Observer) error {
	for _, o := range *m.opts.Load() {
		if n := o.count.Load(); n > 0 {
			obs.Observe(n, metric.WithAttributeSet(o.set))
		}
	}
	return nil
}

// count counts one answer and records its latency since start: err is the
// handler's error, not yet written, which it classifies the way the error
// handler will.
func (m *requestMetrics) count(c echo.Context, err error, start time.Time) {
	l := answerLabels{route: c.Path(), status: c.Response().Status}
	tenant := ""
	if err != nil {
		p := classify(err)
		l.code, tenant = p.code, p.tenant
		if !c.Response().Committed {
			l.status = p.status
		}
	} else if m.tenantLabel {
		tenant, _ = c.Get(logTenantKey).(string)
	}
	o := m.options(l)
	ctx := context.Background()
	if m.tenantLabel {
		// The tenant goes on the counter only, never on the histogram
		// (cardinality times the buckets).
		attrs := append(l.attributes(), attribute.String("tenant", tenant))
		m.requests.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(attrs...)))
	} else {
		o.count.Add(1)
	}
	m.duration.Record(ctx, time.Since(start).Seconds(), o.record...)
}

// options returns the prepared options of an answer's labels.
func (m *requestMetrics) options(l answerLabels) answerOptions {
	if l == hitLabels && m.hit.count != nil {
		return m.hit
	}
	if o, ok := (*m.opts.Load())[l]; ok {
		return o
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.opts.Load()
	o, ok := old[l]
	if !ok {
		o = newAnswerOptions(attribute.NewSet(l.attributes()...))
		next := make(map[answerLabels]answerOptions, len(old)+1)
		for k, v := range old {
			next[k] = v
		}
		next[l] = o
		m.opts.Store(&next)
	}
	return o
}

func (l answerLabels) attributes() []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 4)
	if l.route != "" {
		attrs = append(attrs, semconv.HTTPRoute(l.route))
	}
	attrs = append(attrs, semconv.HTTPResponseStatusCode(l.status))
	if l.code != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(l.code))
	}
	return attrs
}

// lazySpans starts a request's server span when something first needs the
// request's trace context, for a listener that otelhttp does not wrap
// (Config.TracerProvider says why). A nil *lazySpans starts nothing.
type lazySpans struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// lazySpanKey is the echo context key of the span lazySpans started.
const lazySpanKey = "proxy.lazySpan"

func newLazySpans(tp trace.TracerProvider, prop propagation.TextMapPropagator) *lazySpans {
	if tp == nil {
		return nil
	}
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	return &lazySpans{tracer: tp.Tracer(instrumentationName), prop: prop}
}

// context returns the context of c's request with a span in it: the span
// the request already has (otelhttp's, or one started here before), else a
// server span started now, as a child of the caller's traceparent when it
// sent one. A new span's context replaces the request's on c, so that the
// handlers after this point, and requestLogger.serve, see it.
//
// opts are the new span's options beyond its kind (its start time).
func (l *lazySpans) context(c echo.Context, opts ...trace.SpanStartOption) context.Context {
	req := c.Request()
	ctx := req.Context()
	if l == nil || trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	ctx = l.prop.Extract(ctx, propagation.HeaderCarrier(req.Header))
	name := req.Method
	if route := c.Path(); route != "" {
		name += " " + route
	}
	ctx, span := l.tracer.Start(ctx, name, append(opts, trace.WithSpanKind(trace.SpanKindServer))...)
	c.Set(lazySpanKey, span)
	c.SetRequest(req.WithContext(ctx))
	return ctx
}

// end ends the span context started on c, if it started one; entry is c's
// request when the request arrived. A request that got no span still has
// that request, so the cached-token path skips echo's locked store.
func (l *lazySpans) end(c echo.Context, entry *http.Request) {
	if l == nil || c.Request() == entry {
		return
	}
	if span, ok := c.Get(lazySpanKey).(trace.Span); ok {
		span.End()
	}
}
