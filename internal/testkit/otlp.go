package testkit

import (
	"maps"
	"testing"
)

// OTLPEnv points the process's OTLP exporters at endpoint over protocol
// ("http/protobuf" or "grpc"), with spans batched for 100 ms, plus the
// variables of more, all set with t.Setenv (so the test cannot be
// parallel): the exporters read the process environment. It returns the
// variables set, for the test to add its fakes' to and hand to the
// sidecar's getenv.
func OTLPEnv(t testing.TB, endpoint, protocol string, more map[string]string) map[string]string {
	t.Helper()
	env := map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
		"OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
	}
	maps.Copy(env, more)
	for k, v := range env {
		t.Setenv(k, v)
	}
	return env
}
