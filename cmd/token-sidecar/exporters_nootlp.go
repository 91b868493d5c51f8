//go:build nootlp

package main

import (
	"context"
	"errors"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The lean build (-tags nootlp) has no OTLP exporters, and so links neither
// gRPC nor grpc-gateway; console and the admin /metrics remain. Asking it
// for OTLP, by name or by an OTLP endpoint alone, fails the start.

// errNoOTLP is the refusal; newTelemetry prefixes the variables.
var errNoOTLP = errors.New(`"otlp": this binary is the lean build (-tags nootlp), which has no OTLP exporters; use console or none, or the default build`)

func newOTLPSpanExporter(context.Context, string) (sdktrace.SpanExporter, error) {
	return nil, errNoOTLP
}

func newOTLPMetricExporter(context.Context, string) (sdkmetric.Exporter, error) {
	return nil, errNoOTLP
}
