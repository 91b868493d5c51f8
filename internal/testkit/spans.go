package testkit

import (
	"fmt"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// SpansText is everything the spans hold as text, one item a line: each
// span's name and status description, its attributes, and its events with
// theirs. Tests scan it for what must never be in a span.
func SpansText(spans []sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintln(&b, s.Name(), s.Status().Description)
		for _, a := range s.Attributes() {
			fmt.Fprintln(&b, a.Key, a.Value.String())
		}
		for _, e := range s.Events() {
			fmt.Fprintln(&b, e.Name)
			for _, a := range e.Attributes {
				fmt.Fprintln(&b, a.Key, a.Value.String())
			}
		}
	}
	return b.String()
}
