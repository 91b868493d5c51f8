package main

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The exporters are the ones autoexport would build, under the same names
// and defaults, constructed here so that the binary carries only these:
// autoexport also links the OTLP and stdout log exporters and the
// Prometheus bridge, which the sidecar never uses. The OTLP ones are in
// exporters_otlp.go; a binary built with -tags nootlp has none
// (exporters_nootlp.go) and refuses "otlp" at start.

// newSpanExporter builds the span exporter OTEL_TRACES_EXPORTER names:
// "otlp" (when empty) or "console" (stdout). An OTLP exporter speaks
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
// "http/protobuf" (when empty) or "grpc". The name it returns says which
// ("otlp grpc"). The exporter reads its own settings (endpoint, headers,
// timeout, compression) from the process environment.
func newSpanExporter(ctx context.Context, getenv func(string) string) (sdktrace.SpanExporter, string, error) {
	switch name := exporterName(getenv, "OTEL_TRACES_EXPORTER"); name {
	case "otlp":
		proto, err := otlpProtocol(getenv, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
		if err != nil {
			return nil, "", err
		}
		exp, err := newOTLPSpanExporter(ctx, proto)
		return exp, "otlp " + proto, err
	case "console":
		exp, err := stdouttrace.New()
		return exp, name, err
	default:
		return nil, "", fmt.Errorf("OTEL_TRACES_EXPORTER %q: want otlp, console or none", name)
	}
}

// newMetricReader builds the periodic reader of the metric exporter
// OTEL_METRICS_EXPORTER names, as newSpanExporter does for spans
// (OTEL_EXPORTER_OTLP_METRICS_PROTOCOL); the interval is
// OTEL_METRIC_EXPORT_INTERVAL, read by the reader.
func newMetricReader(ctx context.Context, getenv func(string) string) (sdkmetric.Reader, string, error) {
	var (
		exp  sdkmetric.Exporter
		desc string
		err  error
	)
	switch name := exporterName(getenv, "OTEL_METRICS_EXPORTER"); name {
	case "otlp":
		var proto string
		if proto, err = otlpProtocol(getenv, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"); err != nil {
			return nil, "", err
		}
		exp, err = newOTLPMetricExporter(ctx, proto)
		desc = "otlp " + proto
	case "console":
		exp, err = stdoutmetric.New()
		desc = name
	default:
		return nil, "", fmt.Errorf("OTEL_METRICS_EXPORTER %q: want otlp, console, prometheus or none", name)
	}
	if err != nil {
		return nil, "", err
	}
	return sdkmetric.NewPeriodicReader(exp), desc, nil
}

// exporterName is the exporter variable's value, "otlp" when it is empty.
func exporterName(getenv func(string) string, exporterVar string) string {
	if v := strings.ToLower(strings.TrimSpace(getenv(exporterVar))); v != "" {
		return v
	}
	return "otlp"
}

// otlpProtocol is the signal's OTLP protocol (signalVar, else
// OTEL_EXPORTER_OTLP_PROTOCOL, else "http/protobuf"): "http/protobuf" or
// "grpc".
func otlpProtocol(getenv func(string) string, signalVar string) (string, error) {
	v, from := strings.TrimSpace(getenv(signalVar)), signalVar
	if v == "" {
		v, from = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL")), "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	switch v {
	case "", "http/protobuf":
		return "http/protobuf", nil
	case "grpc":
		return v, nil
	default:
		return "", fmt.Errorf("%s %q: want http/protobuf or grpc", from, v)
	}
}
