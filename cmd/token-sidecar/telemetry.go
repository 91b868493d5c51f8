package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/token-sidecar/token-sidecar/upstream"
)

// defaultServiceName is service.name unless OTEL_SERVICE_NAME (or
// service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise.
const defaultServiceName = "token-sidecar"

// maxSpanAttributeValue bounds a span attribute's string value, in
// characters, when the environment sets no limit.
const maxSpanAttributeValue = 1024

// telemetry is the process's OpenTelemetry setup: the providers every
// package gets passed, the W3C propagator, the Prometheus handler of the
// admin /metrics, and the OTLP exporters when the environment asks for them.
//
// Nothing here touches OpenTelemetry's globals, so that several runs (tests)
// can live in one process.
type telemetry struct {
	tracerProvider trace.TracerProvider
	meterProvider  *sdkmetric.MeterProvider
	propagator     propagation.TextMapPropagator
	// metrics serves the Prometheus text of the meter provider, plus the Go
	// runtime and process collectors, from a private registry.
	metrics http.Handler
	// exporters names what sends telemetry out of the process ("traces:
	// otlp"); empty when nothing does.
	exporters []string
	// spanProcessors counts the span processors of tracerProvider; zero
	// means no span is ever recorded (the sampler drops them all).
	spanProcessors int

	shutdowns []func(context.Context) error
}

// telemetryOptions are the test hooks of newTelemetry: extra span
// processors (a tracetest.SpanRecorder) and metric readers (a ManualReader).
type telemetryOptions struct {
	spanProcessors []sdktrace.SpanProcessor
	metricReaders  []sdkmetric.Reader
}

// newTelemetry builds the providers.
//
// Whether traces and metrics leave the process over OTLP is decided here
// from getenv: traces are exported when OTEL_TRACES_EXPORTER is set and not
// "none", or when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set; metrics likewise with
// OTEL_METRICS_EXPORTER and OTEL_EXPORTER_OTLP_METRICS_ENDPOINT, except that
// OTEL_METRICS_EXPORTER=prometheus means the admin /metrics, which is always
// served. OTEL_SDK_DISABLED=true turns both off. Otherwise no exporter is
// built at all: nothing connects anywhere, and the tracer provider is the
// no-op one.
//
// Which exporter, and its OTLP protocol, getenv says too (exporters.go).
// The exporters themselves (otlptracehttp, otlpmetricgrpc…) read their
// settings — endpoint, headers, timeouts, OTEL_TRACES_SAMPLER, OTEL_BSP_* —
// from the process environment, as the OpenTelemetry SDK always does.
func newTelemetry(ctx context.Context, getenv func(string) string, logger *slog.Logger, opts telemetryOptions) (_ *telemetry, err error) {
	t := &telemetry{propagator: propagation.TraceContext{}, exporters: []string{}}
	defer func() {
		if err != nil {
			_ = t.shutdown(context.Background())
		}
	}()
	res, err := newResource(getenv, logger)
	if err != nil {
		return nil, err
	}

	// Traces.
	var spanProcessors []sdktrace.SpanProcessor
	if exportEnabled(getenv, "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
		exp, desc, err := newSpanExporter(ctx, getenv)
		if err != nil {
			return nil, fmt.Errorf("trace exporter (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*): %w", err)
		}
		spanProcessors = append(spanProcessors, sdktrace.NewBatchSpanProcessor(exp))
		t.exporters = append(t.exporters, "traces: "+desc)
	}
	spanProcessors = append(spanProcessors, opts.spanProcessors...)
	t.spanProcessors = len(spanProcessors)
	// A last bound on what reaches a span, whatever sets an attribute:
	// values are cut to maxSpanAttributeValue characters unless
	// OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT or
	// OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT say otherwise.
	limits := sdktrace.NewSpanLimits()
	if limits.AttributeValueLengthLimit < 0 {
		limits.AttributeValueLengthLimit = maxSpanAttributeValue
	}
	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithRawSpanLimits(limits)}
	if len(spanProcessors) == 0 {
		// Nothing exports a span, but a request that goes upstream or is
		// logged still gets a trace and span ID (proxy starts its span on
		// demand), continuing its caller's trace: its log lines carry them,
		// and the upstreams receive them in traceparent. Parent-based, so
		// that traceparent keeps the caller's sampled flag and an upstream
		// that samples by its parent keeps its part of a trace the caller
		// keeps; such spans are then recorded, for nobody, on the paths that
		// go upstream or log. A request without a sampled parent gets a
		// non-recording span, one small allocation.
		topts = append(topts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	for _, sp := range spanProcessors {
		topts = append(topts, sdktrace.WithSpanProcessor(sp))
	}
	tp := sdktrace.NewTracerProvider(topts...)
	t.tracerProvider = tp
	t.shutdowns = append(t.shutdowns, tp.Shutdown)

	// Metrics: the Prometheus exporter on a private registry, always; OTLP
	// when asked for.
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, err
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, err
	}
	promExporter, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		// Explicit, so that the names the README and the dashboard use do
		// not change with the exporter's default.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promExporter)}
	if exportEnabled(getenv, "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
		reader, desc, err := newMetricReader(ctx, getenv)
		if err != nil {
			return nil, fmt.Errorf("metric exporter (OTEL_METRICS_EXPORTER, OTEL_EXPORTER_OTLP_*): %w", err)
		}
		mopts = append(mopts, sdkmetric.WithReader(reader))
		t.exporters = append(t.exporters, "metrics: "+desc)
	}
	for _, r := range opts.metricReaders {
		mopts = append(mopts, sdkmetric.WithReader(r))
	}
	mopts = append(mopts, httpServerViews()...)
	t.meterProvider = sdkmetric.NewMeterProvider(mopts...)
	t.shutdowns = append(t.shutdowns, t.meterProvider.Shutdown)
	t.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      newStdlibLogger(logger, "promhttp"),
	})
	return t, nil
}

// httpServerViews shape otelhttp's metrics: the sidecar's latency buckets;
// on the server side only low-cardinality labels (server.address and
// server.port come from the client's Host header). The body-size histograms
// are dropped: token answers are a few hundred bytes, and the API proxy
// streams bodies through unchanged.
func httpServerViews() []sdkmetric.Option {
	return []sdkmetric.Option{
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Name: "http.server.request.duration"},
			sdkmetric.Stream{
				Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: upstream.LatencyBuckets},
				AttributeFilter: attribute.NewAllowKeysFilter(
					semconv.HTTPRequestMethodKey, semconv.HTTPResponseStatusCodeKey,
					semconv.HTTPRouteKey, semconv.ErrorTypeKey),
			},
		)),
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Name: "http.server.*.body.size"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationDrop{}},
		)),
		// The API proxy's calls (wrapClientTransport).
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Name: "http.client.request.duration"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationExplicitBucketHistogram{Boundaries: upstream.LatencyBuckets}},
		)),
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Name: "http.client.*.body.size"},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationDrop{}},
		)),
	}
}

// exportEnabled decides whether a signal is exported over OTLP; see
// newTelemetry.
func exportEnabled(getenv func(string) string, exporterVar, endpointVar string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch v := strings.ToLower(strings.TrimSpace(getenv(exporterVar))); v {
	case "none", "prometheus":
		// prometheus: the admin listener's /metrics is that server.
		return false
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv(endpointVar) != ""
	default:
		return true
	}
}

// newResource describes the process: service.name (OTEL_SERVICE_NAME, else
// service.name from OTEL_RESOURCE_ATTRIBUTES, else "token-sidecar"),
// service.version from the build, the attributes of OTEL_RESOURCE_ATTRIBUTES,
// the host name and the SDK. Malformed OTEL_RESOURCE_ATTRIBUTES entries are
// skipped with a warning.
func newResource(getenv func(string) string, logger *slog.Logger) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{
		semconv.ServiceName(defaultServiceName),
		semconv.ServiceVersion(buildVersion()),
	}
	env, bad := parseResourceAttributes(getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if bad > 0 {
		logger.Warn("ignoring malformed entries of OTEL_RESOURCE_ATTRIBUTES", "count", bad)
	}
	attrs = append(attrs, env...)
	if name := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); name != "" {
		attrs = append(attrs, semconv.ServiceName(name))
	}
	// Later attributes win over earlier ones with the same key.
	return resource.New(context.Background(),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithAttributes(attrs...),
	)
}

// parseResourceAttributes reads "key1=value1,key2=value2" with
// percent-encoded values, as the OpenTelemetry specification defines
// OTEL_RESOURCE_ATTRIBUTES; bad counts the entries it could not read.
func parseResourceAttributes(s string) (attrs []attribute.KeyValue, bad int) {
	for _, pair := range strings.Split(s, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			bad++
			continue
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			bad++
			continue
		}
		attrs = append(attrs, attribute.String(k, val))
	}
	return attrs, bad
}

// wrapHandler puts the otelhttp server instrumentation around a listener's
// handler: a server span per request (continuing the caller's traceparent)
// and http.server.request.duration. proxy's route middleware names the span
// and labels the metric with http.route. The admin probes and /metrics are
// not traced: they are polled every few seconds and say nothing about a
// token request.
func (t *telemetry) wrapHandler(h http.Handler, operation string) http.Handler {
	return t.otelHandler(h, operation, t.meterProvider)
}

// wrapTokenHandler instruments the token listener, where a cached token is
// answered in a few microseconds and otelhttp would be the largest part of
// its cost. Its latency is proxy's token_sidecar.token.request.duration, not
// otelhttp's http.server.request.duration. When some span processor records
// spans, otelhttp still makes the server spans, without its metrics. When
// none does, the handler is not wrapped at all: no span would be recorded.
// proxy then starts a request's (non-recording) span only when the request
// goes upstream or is logged (proxy.Config.TracerProvider), so that the
// upstreams still receive the caller's trace and log lines carry trace_id
// and span_id, and a cached token costs no span.
func (t *telemetry) wrapTokenHandler(h http.Handler) http.Handler {
	if t.spanProcessors == 0 {
		return h
	}
	return t.otelHandler(h, "token", metricnoop.NewMeterProvider())
}

func (t *telemetry) otelHandler(h http.Handler, operation string, mp metric.MeterProvider) http.Handler {
	return otelhttp.NewHandler(h, operation,
		otelhttp.WithTracerProvider(t.tracerProvider),
		otelhttp.WithMeterProvider(mp),
		otelhttp.WithPropagators(t.propagator),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}),
	)
}

// wrapClientTransport puts the otelhttp client instrumentation over base:
// a client span per request named "{method} {upstream}" (the paths hold
// IDs), the W3C traceparent, and http.client.request.duration. otelhttp
// records no header, so the Authorization header never reaches a span.
//
// Two things otelhttp would record are kept out of the spans. The query
// string: url.full is the URL without it (an app may send
// ?access_token=…), and the query goes back on the request below otelhttp,
// so that the API receives it unchanged. And the transport's error texts,
// which quote what the API sent: base's errors are redacted to fixed
// reasons (upstream.RedactingTransport) before otelhttp sees them.
func (t *telemetry) wrapClientTransport(base http.RoundTripper, upstreamName string) http.RoundTripper {
	return queryStripper{otelhttp.NewTransport(queryRestorer{upstream.RedactingTransport(base)},
		otelhttp.WithTracerProvider(t.tracerProvider),
		otelhttp.WithMeterProvider(t.meterProvider),
		otelhttp.WithPropagators(t.propagator),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + upstreamName
		}),
	)}
}

// queryKey is the context key under which queryStripper hands a request's
// query to queryRestorer.
type queryKey struct{}

// queryStripper sends a request on without its query string, which it
// leaves in the request's context for queryRestorer.
type queryStripper struct{ next http.RoundTripper }

func (q queryStripper) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.RawQuery == "" && !r.URL.ForceQuery {
		return q.next.RoundTrip(r)
	}
	out := r.Clone(context.WithValue(r.Context(), queryKey{}, r.URL.RawQuery))
	out.URL.RawQuery, out.URL.ForceQuery = "", false
	return q.next.RoundTrip(out)
}

// queryRestorer puts back the query queryStripper took off.
type queryRestorer struct{ next http.RoundTripper }

func (q queryRestorer) RoundTrip(r *http.Request) (*http.Response, error) {
	raw, ok := r.Context().Value(queryKey{}).(string)
	if !ok {
		return q.next.RoundTrip(r)
	}
	out := r.Clone(r.Context())
	out.URL.RawQuery = raw
	out.URL.ForceQuery = raw == ""
	return q.next.RoundTrip(out)
}

// meter returns mp as the interface the packages take.
func (t *telemetry) meter() metric.MeterProvider { return t.meterProvider }

// shutdown flushes and stops the exporters: pending spans are sent, and a
// last OTLP metric export is made. It returns the errors of all of them.
func (t *telemetry) shutdown(ctx context.Context) error {
	var errs []error
	for i := len(t.shutdowns) - 1; i >= 0; i-- {
		errs = append(errs, t.shutdowns[i](ctx))
	}
	t.shutdowns = nil
	return errors.Join(errs...)
}
