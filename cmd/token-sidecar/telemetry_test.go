package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// startSidecarWith runs the sidecar through runWith on :0 ports, with run
// options, and waits until both listeners serve; Cleanup stops it.
func startSidecarWith(t *testing.T, env map[string]string, opts []runOption, args ...string) *sidecar {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &sidecar{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	args = append([]string{"-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0"}, args...)
	getenv := func(k string) string { return env[k] }
	go func() {
		s.done <- runWith(ctx, args, getenv, s.stdout, s.stderr, func(tokenAddr, adminAddr string) {
			s.tokenURL, s.adminURL = "http://"+tokenAddr, "http://"+adminAddr
			close(ready)
		}, opts...)
	}()
	select {
	case <-ready:
	case err := <-s.done:
		t.Fatalf("sidecar did not start: %v\n%s", err, s.stderr)
	case <-time.After(10 * time.Second):
		t.Fatal("sidecar did not start in time")
	}
	t.Cleanup(func() { s.stop(t) })
	return s
}

// recorders are a span recorder and a manual metric reader added to the
// sidecar's own providers.
type recorders struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tel    *telemetry
}

func (r *recorders) options() []runOption {
	return []runOption{func(o *runOptions) {
		o.telemetry.spanProcessors = append(o.telemetry.spanProcessors, r.spans)
		o.telemetry.metricReaders = append(o.telemetry.metricReaders, r.reader)
		o.inspectTelemetry = func(t *telemetry) { r.tel = t }
	}}
}

// metrics reads the counters and gauges, and the histograms' counts, as
// "name{k=v,…}" with the attributes named in keep.
func (r *recorders) metrics(t *testing.T, keep ...attribute.Key) map[string]float64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	kept := map[attribute.Key]bool{}
	for _, k := range keep {
		kept[k] = true
	}
	name := func(m string, set attribute.Set) string {
		var kv []string
		for _, a := range set.ToSlice() {
			if kept[a.Key] {
				kv = append(kv, string(a.Key)+"="+a.Value.String())
			}
		}
		sort.Strings(kv)
		return m + "{" + strings.Join(kv, ",") + "}"
	}
	out := map[string]float64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[name(m.Name, p.Attributes)] += float64(p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[name(m.Name, p.Attributes)] += float64(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[name(m.Name, p.Attributes)] += float64(p.Count)
				}
			}
		}
	}
	return out
}

// TestTelemetryOfAScriptedRun runs a scripted sequence through the whole
// sidecar — a miss whose Tenant Service fetch is retried once, two hits and
// a 404 — and checks the exact metrics, the trace of the miss and the trace
// IDs of the log lines.
func TestTelemetryOfAScriptedRun(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	f.ts.Script("acme", "genesys", upstreamtest.Step{Status: http.StatusServiceUnavailable})
	rec := &recorders{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s := startSidecarWith(t, f.env(), rec.options(), "-log-level", "debug")

	miss := s.token(t, "acme")
	for range 2 {
		if a := s.token(t, "acme"); a.Status != http.StatusOK || a.AccessToken != miss.AccessToken {
			t.Fatalf("hit: status %d", a.Status)
		}
	}
	if a := s.token(t, "ghost"); a.Status != http.StatusNotFound || a.Code != "CREDENTIALS_NOT_FOUND" {
		t.Fatalf("ghost: status %d code %q", a.Status, a.Code)
	}
	if miss.Status != http.StatusOK {
		t.Fatalf("miss: status %d", miss.Status)
	}

	got := rec.metrics(t, "provider", "http.route", "http.response.status_code", "error.type", "upstream", "outcome", "reason", "trigger")
	want := map[string]float64{
		"token_sidecar.cache.hits{provider=genesys}":               2,
		"token_sidecar.cache.misses{provider=genesys}":             2, // acme and ghost
		"token_sidecar.cache.entries{}":                            2, // acme's token, ghost's negative entry
		"token_sidecar.token.remaining_lifetime{provider=genesys}": 2,

		"token_sidecar.token.requests{http.response.status_code=200,http.route=/token}":                                          3,
		"token_sidecar.token.requests{error.type=CREDENTIALS_NOT_FOUND,http.response.status_code=404,http.route=/token}":         1,
		"token_sidecar.token.request.duration{http.response.status_code=200,http.route=/token}":                                  3,
		"token_sidecar.token.request.duration{error.type=CREDENTIALS_NOT_FOUND,http.response.status_code=404,http.route=/token}": 1,

		"token_sidecar.upstream.requests{outcome=ok,upstream=tenant_service}":                            1,
		"token_sidecar.upstream.requests{outcome=CREDENTIALS_NOT_FOUND,upstream=tenant_service}":         1,
		"token_sidecar.upstream.requests{outcome=ok,upstream=genesys_login}":                             1,
		"token_sidecar.upstream.request.duration{outcome=ok,upstream=tenant_service}":                    1,
		"token_sidecar.upstream.request.duration{outcome=CREDENTIALS_NOT_FOUND,upstream=tenant_service}": 1,
		"token_sidecar.upstream.request.duration{outcome=ok,upstream=genesys_login}":                     1,
		"token_sidecar.upstream.attempt.duration{outcome=http_503,upstream=tenant_service}":              1,
		"token_sidecar.upstream.attempt.duration{outcome=ok,upstream=tenant_service}":                    1,
		"token_sidecar.upstream.attempt.duration{outcome=http_404,upstream=tenant_service}":              1,
		"token_sidecar.upstream.attempt.duration{outcome=ok,upstream=genesys_login}":                     1,
		"token_sidecar.upstream.retries{reason=http_503,upstream=tenant_service}":                        1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	families := map[string]bool{}
	for k := range want {
		families[k[:strings.IndexByte(k, '{')]] = true
	}
	for k, v := range got {
		if _, ok := want[k]; !ok && families[k[:strings.IndexByte(k, '{')]] {
			t.Errorf("unexpected series %s = %v", k, v)
		}
		if strings.Contains(k, "tenant=") {
			t.Errorf("%s has a tenant label without -metrics-tenant-label", k)
		}
	}

	// The miss is one trace: server span → cache.fetch → tenant_service.fetch
	// (a retry event, two attempts) and genesys_login.exchange (one).
	s.stop(t) // flushes; every span has ended
	spans := rec.spans.Ended()
	var server sdktrace.ReadOnlySpan
	for _, sp := range spans {
		if sp.Name() == "GET /token" && server == nil {
			server = sp // the first request: the miss
		}
	}
	if server == nil {
		t.Fatalf("no server span GET /token among %v", spanNames(spans))
	}
	children := func(parent sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, sp := range spans {
			if sp.Parent().SpanID() == parent.SpanContext().SpanID() && sp.Name() == name {
				out = append(out, sp)
			}
		}
		return out
	}
	fetch := children(server, "cache.fetch")
	if len(fetch) != 1 {
		t.Fatalf("cache.fetch under the miss: %d; spans %v", len(fetch), spanNames(spans))
	}
	ts, login := children(fetch[0], "tenant_service.fetch"), children(fetch[0], "genesys_login.exchange")
	if len(ts) != 1 || len(login) != 1 {
		t.Fatalf("upstream call spans: %d tenant_service, %d genesys_login", len(ts), len(login))
	}
	if n := len(children(ts[0], "GET /tenants/{tenant}/credentials/{provider}")); n != 2 {
		t.Errorf("Tenant Service attempt spans = %d, want 2", n)
	}
	if n := len(children(login[0], "POST /oauth/token")); n != 1 {
		t.Errorf("Genesys login attempt spans = %d, want 1", n)
	}
	if ev := ts[0].Events(); len(ev) != 1 || ev[0].Name != "retry" {
		t.Errorf("tenant_service.fetch events = %v, want one retry", ev)
	}
	for _, sp := range spans {
		if sp.Name() == "GET /token" && sp.SpanContext().TraceID() == server.SpanContext().TraceID() && sp != server {
			t.Errorf("two requests share a trace")
		}
	}

	// Log lines of the miss carry its trace: the retry warning with the
	// Tenant Service call's span, the request line with the server span.
	traceID := server.SpanContext().TraceID().String()
	var retryLine, requestLine map[string]any
	for _, line := range logLines(t, s.stderr.String()) {
		switch {
		case line["msg"] == "upstream attempt failed, retrying":
			retryLine = line
		case line["msg"] == "request" && line["trace_id"] == traceID:
			requestLine = line
		}
	}
	if retryLine == nil || retryLine["trace_id"] != traceID || retryLine["span_id"] != ts[0].SpanContext().SpanID().String() {
		t.Errorf("retry log line %v; want trace_id %s span_id %s", retryLine, traceID, ts[0].SpanContext().SpanID())
	}
	if requestLine == nil || requestLine["span_id"] != server.SpanContext().SpanID().String() {
		t.Errorf("request log line %v; want the server span's IDs", requestLine)
	}
	if len(rec.tel.exporters) != 0 {
		t.Errorf("exporters %v without OTEL_* variables", rec.tel.exporters)
	}
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

func logLines(t *testing.T, text string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// TestNoOTELVariablesNoExporter checks that without OTEL_* settings no
// exporter is built and no span is recorded, even when the process
// environment (which the exporters would read) names an endpoint: the
// decision is run's getenv's.
func TestNoOTELVariablesNoExporter(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9") // must be ignored
	f := newFakes(t)
	f.addTenant("acme")
	var tel *telemetry
	s := startSidecarWith(t, f.env(), []runOption{func(o *runOptions) { o.inspectTelemetry = func(t *telemetry) { tel = t } }})
	if a := s.token(t, "acme"); a.Status != http.StatusOK {
		t.Fatalf("status %d", a.Status)
	}
	if len(tel.exporters) != 0 || tel.spanProcessors != 0 {
		t.Fatalf("exporters %v, span processors %d; want none", tel.exporters, tel.spanProcessors)
	}
	if !strings.Contains(s.stderr.String(), `"telemetry_exporters":[]`) {
		t.Errorf("start line does not say that nothing is exported:\n%s", s.stderr)
	}
}

// TestTraceContextWithoutAnExporter: with no OTEL_* variables nothing is
// exported and the token listener is not wrapped in otelhttp, yet a request
// that goes upstream or is logged still continues the caller's trace: the
// Tenant Service receives it in traceparent, and the request's log line
// carries its trace_id and span_id.
func TestTraceContextWithoutAnExporter(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	f := newFakes(t)
	f.addTenant("acme")
	s := startSidecar(t, f.env())
	caller := map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}
	if a := do(t, http.MethodGet, s.tokenURL+"/token?tenant=acme", caller); a.Status != http.StatusOK {
		t.Fatalf("acme: status %d", a.Status)
	}
	if a := do(t, http.MethodGet, s.tokenURL+"/token?tenant=gone", caller); a.Status != http.StatusNotFound {
		t.Fatalf("gone: status %d", a.Status)
	}
	reqs := f.ts.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d Tenant Service calls, want 2", len(reqs))
	}
	for _, r := range reqs {
		// The caller sampled its trace (flags 01): so must the upstreams.
		tp := r.Header.Get("Traceparent")
		if !strings.HasPrefix(tp, "00-"+traceID+"-") || !strings.HasSuffix(tp, "-01") {
			t.Errorf("%s: traceparent %q, want the caller's sampled trace %s", r.RequestURI, tp, traceID)
		}
	}
	// A caller that does not sample its trace: neither do the upstreams.
	if a := do(t, http.MethodGet, s.tokenURL+"/token?tenant=also-gone",
		map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-00"}); a.Status != http.StatusNotFound {
		t.Fatalf("also-gone: status %d", a.Status)
	}
	if reqs := f.ts.Requests(); len(reqs) != 3 || !strings.HasSuffix(reqs[2].Header.Get("Traceparent"), "-00") {
		t.Errorf("unsampled caller: Tenant Service calls %d, last traceparent %q; want flags 00", len(reqs), reqs[len(reqs)-1].Header.Get("Traceparent"))
	}
	var line map[string]any
	for _, l := range logLines(t, s.stderr.String()) {
		if l["msg"] == "request" && l["tenant"] == "gone" {
			line = l
		}
	}
	if line == nil || line["trace_id"] != traceID || line["span_id"] == nil || line["span_id"] == "00f067aa0ba902b7" {
		t.Errorf("the 404's log line %v; want trace_id %s and a span_id of its own", line, traceID)
	}
}

// TestTokenListenerTelemetry: without a span processor the token listener
// is not wrapped in otelhttp (proxy starts spans on demand instead, see
// TestTraceContextWithoutAnExporter); with one, otelhttp makes the server spans, continuing the
// caller's trace, without http.server.request.duration.
func TestTokenListenerTelemetry(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tracing := range []bool{false, true} {
		spans := tracetest.NewSpanRecorder()
		reader := sdkmetric.NewManualReader()
		opts := telemetryOptions{metricReaders: []sdkmetric.Reader{reader}}
		if tracing {
			opts.spanProcessors = []sdktrace.SpanProcessor{spans}
		}
		tel, err := newTelemetry(context.Background(), func(string) string { return "" }, discardLogger(), opts)
		if err != nil {
			t.Fatal(err)
		}
		var got trace.SpanContext
		h := tel.wrapTokenHandler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
			got = trace.SpanContextFromContext(r.Context())
		}))
		r := httptest.NewRequest(http.MethodGet, "/token", nil)
		r.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		h.ServeHTTP(httptest.NewRecorder(), r)
		if !tracing {
			if got.IsValid() {
				t.Errorf("tracing off: the request has span context %v, want none (no otelhttp)", got)
			}
		} else {
			if got.TraceID().String() != traceID || len(spans.Ended()) != 1 {
				t.Errorf("tracing on: trace %s, %d spans; want the caller's trace %s and one span", got.TraceID(), len(spans.Ended()), traceID)
			}
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if strings.HasPrefix(m.Name, "http.server.") {
					t.Errorf("tracing %v: otelhttp recorded %s for the token listener", tracing, m.Name)
				}
			}
		}
		if err := tel.shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExportEnabled(t *testing.T) {
	const tr, te = "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	const mr, me = "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	for _, tc := range []struct {
		env            map[string]string
		traces, metric bool
	}{
		{nil, false, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true, true},
		{map[string]string{te: "http://c:4318/v1/traces"}, true, false},
		{map[string]string{me: "http://c:4318/v1/metrics"}, false, true},
		{map[string]string{tr: "otlp"}, true, false},
		{map[string]string{tr: "console", mr: "otlp"}, true, true},
		{map[string]string{tr: "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false, true},
		{map[string]string{mr: "prometheus", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, true, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false, false},
	} {
		getenv := func(k string) string { return tc.env[k] }
		if got := exportEnabled(getenv, tr, te); got != tc.traces {
			t.Errorf("%v: traces %v, want %v", tc.env, got, tc.traces)
		}
		if got := exportEnabled(getenv, mr, me); got != tc.metric {
			t.Errorf("%v: metrics %v, want %v", tc.env, got, tc.metric)
		}
	}
}

func TestResource(t *testing.T) {
	for _, tc := range []struct {
		env        map[string]string
		name, more string
	}{
		{nil, "token-sidecar", ""},
		{map[string]string{"OTEL_SERVICE_NAME": "auth-sidecar"}, "auth-sidecar", ""},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs,k8s.pod.name=pod%2D1,bad"}, "from-attrs", "k8s.pod.name=pod-1"},
		{map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs", "OTEL_SERVICE_NAME": "wins"}, "wins", ""},
	} {
		res, err := newResource(func(k string) string { return tc.env[k] }, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		attrs := map[string]string{}
		for _, a := range res.Attributes() {
			attrs[string(a.Key)] = a.Value.String()
		}
		if attrs["service.name"] != tc.name || attrs["service.version"] == "" {
			t.Errorf("%v: service.name %q version %q; want %q", tc.env, attrs["service.name"], attrs["service.version"], tc.name)
		}
		if k, v, ok := strings.Cut(tc.more, "="); ok && attrs[k] != v {
			t.Errorf("%v: %s = %q, want %q", tc.env, k, attrs[k], v)
		}
	}
}

// otlpReceiver is an OTLP/HTTP receiver: it keeps the raw bodies of
// /v1/traces and /v1/metrics.
type otlpReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	raw map[string][][]byte // path → bodies
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{raw: map[string][][]byte{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body io.Reader = req.Body
		if req.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		b, err := io.ReadAll(body)
		if err != nil || req.Method != http.MethodPost {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.raw[req.URL.Path] = append(r.raw[req.URL.Path], b)
		r.mu.Unlock()
		// No keep-alive: the exporters' shared transport would otherwise
		// keep a connection (and its goroutines) open after the test.
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) bodies(path string) [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.raw[path]...)
}

// TestOTLPExportCarriesTheTraceAndNoSecret points the standard OTLP
// variables at an in-test receiver: the spans of a miss arrive, and no
// client secret, client ID or access token is in any byte exported. The
// exporters read the process environment, hence t.Setenv (and no
// t.Parallel).
func TestOTLPExportCarriesTheTraceAndNoSecret(t *testing.T) {
	recv := newOTLPReceiver(t)
	env := testkit.OTLPEnv(t, recv.srv.URL, "http/protobuf", map[string]string{"OTEL_SERVICE_NAME": "token-sidecar-test"})
	f := newFakes(t)
	clientID := f.addTenant("acme")
	creds, _ := f.ts.CredentialsOf("acme")
	for k, v := range f.env() {
		env[k] = v
	}
	var tel *telemetry
	s := startSidecarWith(t, env, []runOption{func(o *runOptions) { o.inspectTelemetry = func(t *telemetry) { tel = t } }})
	a := s.token(t, "acme")
	if a.Status != http.StatusOK {
		t.Fatalf("status %d", a.Status)
	}
	s.token(t, "acme")
	if err := s.stop(t); err != nil { // flushes spans and metrics
		t.Fatal(err)
	}
	if len(tel.exporters) != 2 {
		t.Errorf("exporters %v, want traces and metrics", tel.exporters)
	}

	names := map[string]int{}
	var traceIDs = map[string]bool{}
	for _, b := range recv.bodies("/v1/traces") {
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Fatalf("not an OTLP trace export: %v", err)
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					names[sp.Name]++
					if sp.Name == "cache.fetch" {
						traceIDs[string(sp.TraceId)] = true
					}
				}
			}
		}
	}
	for name, n := range map[string]int{
		"GET /token": 2, "cache.fetch": 1, "tenant_service.fetch": 1, "genesys_login.exchange": 1,
		"GET /tenants/{tenant}/credentials/{provider}": 1, "POST /oauth/token": 1,
	} {
		if names[name] != n {
			t.Errorf("span %q exported %d times, want %d (all: %v)", name, names[name], n, names)
		}
	}
	if len(recv.bodies("/v1/metrics")) == 0 {
		t.Error("no metrics exported over OTLP")
	}
	for path, bodies := range map[string][][]byte{"/v1/traces": recv.bodies("/v1/traces"), "/v1/metrics": recv.bodies("/v1/metrics")} {
		for _, b := range bodies {
			for what, secret := range map[string]string{"client secret": creds.ClientSecret, "client ID": clientID, "access token": a.AccessToken} {
				if bytes.Contains(b, []byte(secret)) {
					t.Errorf("%s export holds the %s", path, what)
				}
			}
			if bytes.Contains(b, []byte("Basic ")) || bytes.Contains(bytes.ToLower(b), []byte("authorization")) {
				t.Errorf("%s export holds an Authorization header", path)
			}
		}
	}
	if !bytes.Contains(bytes.Join(recv.bodies("/v1/traces"), nil), []byte("token-sidecar-test")) {
		t.Error("service.name from OTEL_SERVICE_NAME not exported")
	}
}

// dashboardQueries are the PromQL queries of the Grafana dashboard: every
// panel target and every templating variable's definition.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile("../../charts/token-sidecar/dashboards/token-sidecar.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	return exprs
}

// TestDashboardMetricsExist runs a script that makes every metric appear,
// then checks that each metric name the Grafana dashboard queries is in
// /metrics.
func TestDashboardMetricsExist(t *testing.T) {
	exprs := dashboardQueries(t)
	if len(exprs) < 10 {
		t.Fatalf("only %d queries in the dashboard", len(exprs))
	}
	names := metricNames(exprs)
	if len(names) < 10 {
		t.Fatalf("only %d metric names found in the dashboard: %v", len(names), names)
	}

	s := scriptedRun(t)
	exposed := map[string]bool{}
	for _, line := range strings.Split(fetchMetrics(t, s), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			exposed[line[:i]] = true
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, "token_sidecar_shared_cache_") {
			continue // needs a shared cache: TestDashboardSharedCacheMetricsExist
		}
		if strings.HasPrefix(n, "token_sidecar_credential_keys") {
			continue // needs a key file: TestDashboardCredentialMetricsExist
		}
		if !exposed[n] && !exposed[n+"_bucket"] && !exposed[n+"_count"] {
			t.Errorf("the dashboard queries %s, which /metrics does not have after the scripted run", n)
		}
	}
}

// metricNames extracts the metric names of PromQL expressions: identifiers
// followed by a selector or a range, minus PromQL's functions and keywords.
func metricNames(exprs []string) []string {
	ident := regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	notMetric := map[string]bool{
		"sum": true, "rate": true, "by": true, "without": true, "histogram_quantile": true, "or": true, "and": true,
		"unless": true, "vector": true, "le": true, "label_values": true, "max": true, "min": true, "avg": true,
		"count": true, "increase": true, "irate": true, "on": true, "ignoring": true, "topk": true, "offset": true,
	}
	// Drop label_values' label argument, label matchers, grouping clauses
	// and $variables first.
	labelValues := regexp.MustCompile(`label_values\(([^,)]*),[^)]*\)`)
	clean := regexp.MustCompile(`\{[^}]*\}|\[[^\]]*\]|\b(by|without)\s*\([^)]*\)|\$\w+|"[^"]*"`)
	seen := map[string]bool{}
	var out []string
	for _, e := range exprs {
		e = labelValues.ReplaceAllString(e, "$1")
		for _, id := range ident.FindAllString(clean.ReplaceAllString(e, " "), -1) {
			if notMetric[id] || seen[id] {
				continue
			}
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// scriptedRun starts a sidecar and makes every metric of the dashboard
// appear: misses, hits, a retry, a 404 and a negative hit, collapsed
// callers, a refresh ahead by the timer and a stale hit (a 10 s token with
// -refresh-at 0.1), a forced refresh and a limited one, and an eviction.
func scriptedRun(t *testing.T) *sidecar {
	t.Helper()
	f := newFakes(t)
	f.addTenant("acme")
	f.ts.Script("acme", "genesys", upstreamtest.Step{Status: http.StatusServiceUnavailable})
	short := f.addTenant("short")
	f.login.SetExpiresIn(short, 10)
	// The timer's refresh ahead (at 1 s) is slow, so the request at 1.1 s
	// is a stale hit.
	f.ts.Script("short", "genesys", upstreamtest.Step{}, upstreamtest.Step{Delay: 2 * time.Second})
	f.addTenant("slow")
	f.ts.Script("slow", "genesys", upstreamtest.Step{Delay: 300 * time.Millisecond})
	for _, tn := range []string{"t1", "t2", "t3"} {
		f.addTenant(tn)
	}
	s := startSidecarWith(t, f.env(), nil, "-refresh-at", "0.1", "-cache-capacity", "5")

	must := func(a tokenAnswer, status int) {
		t.Helper()
		if a.Status != status {
			t.Fatalf("status %d (%s), want %d", a.Status, a.Code, status)
		}
	}
	must(s.token(t, "acme"), 200) // miss, retried fetch
	must(s.token(t, "acme"), 200) // hit
	must(s.token(t, "ghost"), 404)
	must(s.token(t, "ghost"), 404) // negative hit
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { must(s.token(t, "slow"), 200) }) // collapsed
	}
	wg.Wait()
	must(s.token(t, "short"), 200)
	time.Sleep(1100 * time.Millisecond) // past 10 % of 10 s
	must(s.token(t, "short"), 200)      // stale hit: the timer's refresh runs
	must(do(t, http.MethodPost, s.tokenURL+"/token/refresh?tenant=acme", nil), 200)
	must(do(t, http.MethodPost, s.tokenURL+"/token/refresh?tenant=acme", nil), 200) // limited
	for _, tn := range []string{"t1", "t2", "t3"} {
		must(s.token(t, tn), 200) // the sixth and seventh entries evict
	}
	return s
}

func fetchMetrics(t *testing.T, s *sidecar) string {
	t.Helper()
	resp, err := client.Get(s.adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// TestMetricsEndpointNames pins the Prometheus names the README documents.
func TestMetricsEndpointNames(t *testing.T) {
	text := fetchMetrics(t, scriptedRun(t))
	for _, name := range []string{
		"token_sidecar_token_requests_total",
		"token_sidecar_cache_hits_total",
		"token_sidecar_cache_stale_hits_total",
		"token_sidecar_cache_misses_total",
		"token_sidecar_cache_negative_hits_total",
		"token_sidecar_cache_collapsed_total",
		"token_sidecar_cache_refreshes_total",
		"token_sidecar_cache_refresh_limited_total",
		"token_sidecar_cache_evictions_total",
		"token_sidecar_cache_entries",
		"token_sidecar_token_remaining_lifetime_seconds_bucket",
		"token_sidecar_upstream_requests_total",
		"token_sidecar_upstream_request_duration_seconds_bucket",
		"token_sidecar_upstream_attempt_duration_seconds_bucket",
		"token_sidecar_upstream_retries_total",
		"token_sidecar_token_request_duration_seconds_bucket",
		"go_goroutines",
		"process_resident_memory_bytes",
		"target_info",
	} {
		if !regexp.MustCompile(`(?m)^` + name + `[{ ]`).MatchString(text) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	for _, bad := range []string{"tenant=", "secret", "client-"} {
		if strings.Contains(text, bad) {
			t.Errorf("/metrics contains %q", bad)
		}
	}
	// The token API's latency has the latency buckets (a view), and
	// otelhttp does not measure the token listener a second time.
	if !regexp.MustCompile(`(?m)^token_sidecar_token_request_duration_seconds_bucket\{[^}]*le="0\.0005"`).MatchString(text) {
		t.Error("token_sidecar_token_request_duration_seconds lacks the 0.5 ms bucket of upstream.LatencyBuckets")
	}
	if regexp.MustCompile(`(?m)^http_server_request_duration_seconds_bucket\{[^}]*http_route="/token`).MatchString(text) {
		t.Error("/metrics has http_server_request_duration_seconds for the token listener")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
