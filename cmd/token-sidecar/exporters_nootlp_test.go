//go:build nootlp

package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestLeanBuildRefusesOTLP: the lean build has no OTLP exporters, so a
// start that asks for OTLP — by exporter name or by an OTLP endpoint alone —
// fails, naming the build; console and none still start. (The admin
// /metrics of this build: TestMetricsEndpointNames under -tags nootlp.)
func TestLeanBuildRefusesOTLP(t *testing.T) {
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
	for _, tc := range []struct {
		env  map[string]string
		want string // exporters joined by ","; "error: …" for an error containing …
	}{
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, "error: OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "error: OTEL_METRICS_EXPORTER"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}, "error: OTEL_TRACES_EXPORTER"},
		{map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:9"}, "error: OTEL_METRICS_EXPORTER"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}, "traces: console,metrics: console"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "prometheus"}, ""},
	} {
		got := exporterChoice(tc.env)
		if !choiceIs(got, tc.want) || strings.HasPrefix(tc.want, "error: ") && !strings.Contains(got, "lean build (-tags nootlp)") {
			t.Errorf("%v: got %q, want %q (an error naming the lean build)", tc.env, got, tc.want)
		}
	}

	// Through run: the start fails and stderr says why.
	var stderr syncBuffer
	getenv := func(k string) string { return map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}[k] }
	if err := run(context.Background(), []string{"-demo", "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"}, getenv, io.Discard, &stderr); err == nil {
		t.Fatal("run started with OTEL_TRACES_EXPORTER=otlp in the lean build")
	}
	if !strings.Contains(stderr.String(), "lean build (-tags nootlp)") {
		t.Errorf("stderr does not name the lean build:\n%s", stderr.String())
	}
}
