//go:build !nootlp

package main

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
)

// grpcReceiver is an OTLP/gRPC receiver that counts the spans and metric
// exports it is sent.
type grpcReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	addr string

	mu      sync.Mutex
	spans   []string
	metrics int
}

func newGRPCReceiver(t *testing.T) *grpcReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &grpcReceiver{addr: lis.Addr().String()}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, r)
	colmetricspb.RegisterMetricsServiceServer(srv, metricsService{r: r})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return r
}

func (r *grpcReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				r.spans = append(r.spans, sp.Name)
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// metricsService adapts the receiver to the metrics service, whose Export
// has the same name as the trace service's.
type metricsService struct {
	colmetricspb.UnimplementedMetricsServiceServer
	r *grpcReceiver
}

func (m metricsService) Export(context.Context, *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	m.r.mu.Lock()
	m.r.metrics++
	m.r.mu.Unlock()
	return &colmetricspb.ExportMetricsServiceResponse{}, nil
}

// TestOTLPGRPCExport: with OTEL_EXPORTER_OTLP_PROTOCOL=grpc the spans and
// metrics of a miss reach an OTLP/gRPC receiver, and the start line says
// which exporters run.
func TestOTLPGRPCExport(t *testing.T) {
	recv := newGRPCReceiver(t)
	env := testkit.OTLPEnv(t, "http://"+recv.addr, "grpc", map[string]string{"OTEL_EXPORTER_OTLP_INSECURE": "true"})
	f := newFakes(t)
	f.addTenant("acme")
	for k, v := range f.env() {
		env[k] = v
	}
	var tel *telemetry
	s := startSidecarWith(t, env, []runOption{func(o *runOptions) { o.inspectTelemetry = func(t *telemetry) { tel = t } }})
	if a := s.token(t, "acme"); a.Status != 200 {
		t.Fatalf("status %d", a.Status)
	}
	if err := s.stop(t); err != nil { // flushes spans and metrics
		t.Fatal(err)
	}
	if got, want := strings.Join(tel.exporters, ","), "traces: otlp grpc,metrics: otlp grpc"; got != want {
		t.Errorf("exporters %q, want %q", got, want)
	}
	if !strings.Contains(s.stderr.String(), `"telemetry_exporters":["traces: otlp grpc","metrics: otlp grpc"]`) {
		t.Errorf("start line does not name the exporters:\n%s", s.stderr)
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if !strings.Contains(strings.Join(recv.spans, ","), "cache.fetch") {
		t.Errorf("spans over gRPC %v, want the miss's cache.fetch among them", recv.spans)
	}
	if recv.metrics == 0 {
		t.Error("no metrics exported over gRPC")
	}
}

// TestExporterChoice: which exporter OTEL_TRACES_EXPORTER,
// OTEL_METRICS_EXPORTER and the OTLP protocol variables pick, and the
// errors for names the sidecar does not know. The choice is read through
// getenv; the exporters' own settings (endpoint…) from the process
// environment, hence t.Setenv.
func TestExporterChoice(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
	t.Setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
	for _, tc := range []struct {
		env  map[string]string
		want string // exporters joined by ","; "error: …" for an error containing …
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "x"}, "traces: otlp http/protobuf,metrics: otlp http/protobuf"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "traces: otlp grpc"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "traces: otlp http/protobuf"},
		{map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}, "metrics: otlp grpc"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "console"}, "traces: console,metrics: console"},
		{map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, `error: OTEL_TRACES_EXPORTER "zipkin"`},
		{map[string]string{"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, `error: OTEL_EXPORTER_OTLP_PROTOCOL "http/json"`},
	} {
		if got := exporterChoice(tc.env); !choiceIs(got, tc.want) {
			t.Errorf("%v: got %q, want %q", tc.env, got, tc.want)
		}
	}
}
