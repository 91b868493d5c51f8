//go:build !nootlp

package main

import (
	"context"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The default build carries the OTLP exporters. They link gRPC and
// grpc-gateway (through go.opentelemetry.io/proto/otlp/collector), even for
// OTLP over HTTP; -tags nootlp builds without them (exporters_nootlp.go).

// newOTLPSpanExporter is the OTLP span exporter for proto, "grpc" or
// "http/protobuf".
func newOTLPSpanExporter(ctx context.Context, proto string) (sdktrace.SpanExporter, error) {
	if proto == "grpc" {
		return otlptracegrpc.New(ctx)
	}
	return otlptracehttp.New(ctx)
}

// newOTLPMetricExporter is the OTLP metric exporter for proto, as
// newOTLPSpanExporter.
func newOTLPMetricExporter(ctx context.Context, proto string) (sdkmetric.Exporter, error) {
	if proto == "grpc" {
		return otlpmetricgrpc.New(ctx)
	}
	return otlpmetrichttp.New(ctx)
}
