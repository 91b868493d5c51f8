package main

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// traceLogHandler adds trace_id and span_id to every record logged with a
// context that holds a valid span context, so that a request's log lines can
// be found from its trace and back. The IDs come from the server span of
// the request, or from the upstream call span for the upstream clients'
// lines. When no span is recorded (no trace exporter), the token listener
// has no server span (wrapTokenHandler): its request lines carry no IDs.
type traceLogHandler struct {
	slog.Handler
}

func newTraceLogHandler(h slog.Handler) slog.Handler { return traceLogHandler{h} }

// Handle implements slog.Handler.
func (h traceLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(
			slog.String("trace_id", sc.TraceID().String()),
			slog.String("span_id", sc.SpanID().String()),
		)
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h traceLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceLogHandler{h.Handler.WithAttrs(attrs)}
}

// WithGroup implements slog.Handler.
func (h traceLogHandler) WithGroup(name string) slog.Handler {
	return traceLogHandler{h.Handler.WithGroup(name)}
}
