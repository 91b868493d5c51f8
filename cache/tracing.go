package cache

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// What the cache did for a request, as the attribute token_sidecar.cache.result
// of the caller's span. Built once: tagging a request allocates nothing.
var (
	resultHit            = attribute.String("token_sidecar.cache.result", "hit")
	resultStaleHit       = attribute.String("token_sidecar.cache.result", "stale_hit")
	resultMiss           = attribute.String("token_sidecar.cache.result", "miss")
	resultNegativeHit    = attribute.String("token_sidecar.cache.result", "negative_hit")
	resultForced         = attribute.String("token_sidecar.cache.result", "forced_refresh")
	resultRefreshLimited = attribute.String("token_sidecar.cache.result", "refresh_limited")
	resultNotRefused     = attribute.String("token_sidecar.cache.result", "refresh_superseded")
)

// tagRequest records on the caller's span what the cache did. It costs one
// context lookup when the span is not recording.
func tagRequest(ctx context.Context, result attribute.KeyValue) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(result)
	}
}

// noteCollapsed records on a caller's span that it waited for a fetch another
// caller had started, with a link to that fetch's span.
func noteCollapsed(ctx context.Context, fetch trace.SpanContext) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent("cache.collapsed")
	if fetch.IsValid() {
		span.AddLink(trace.Link{SpanContext: fetch})
	}
}
