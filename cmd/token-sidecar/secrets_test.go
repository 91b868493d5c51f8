package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// newAPIFixture is the fakes plus the fake Genesys API, and the sidecar's
// environment pointing at all three.
func newAPIFixture(t *testing.T) (*fakes, *upstreamtest.API, map[string]string) {
	f := newFakes(t)
	api := upstreamtest.NewAPI(f.login)
	t.Cleanup(api.Close)
	env := f.env()
	env["SIDECAR_GENESYS_API_URL"] = api.URL()
	return f, api, env
}

// TestAPIProxySpansLeaveTheQueryOut: an app's query string may hold
// anything (?access_token=…): the API request carries it unchanged, and no
// span records it — the client span's url.full keeps the path only.
func TestAPIProxySpansLeaveTheQueryOut(t *testing.T) {
	f, api, env := newAPIFixture(t)
	f.addTenant("acme")
	rec := &recorders{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s := startSidecarWith(t, env, rec.options(), "-default-tenant", "acme")
	const secret = "qs-7f3e9a1c5b"
	resp, body := proxied(t, "GET", s.tokenURL+"/proxy/api/v2/users/me?access_token="+secret+"&x=1", nil, nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), secret) {
		t.Fatalf("status %d body %s; want the API's echo of the query", resp.StatusCode, body)
	}
	if reqs := api.Requests(); len(reqs) != 1 || reqs[0].RequestURI != "/api/v2/users/me?access_token="+secret+"&x=1" {
		t.Fatalf("the API received %+v", reqs)
	}
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	var fullURL string
	for _, sp := range rec.spans.Ended() {
		for _, a := range sp.Attributes() {
			if a.Key == "url.full" && sp.Name() == "GET genesys_api" {
				fullURL = a.Value.AsString()
			}
		}
	}
	if fullURL != api.URL()+"/api/v2/users/me" {
		t.Errorf("client span url.full = %q, want the API URL without the query", fullURL)
	}
	if text := testkit.SpansText(rec.spans.Ended()); strings.Contains(text, secret) {
		t.Errorf("the spans hold the query:\n%s", text)
	}
}

// TestAPIProxyMalformedAnswersAreNotQuoted: an API answer broken on the
// wire — here carrying the token the app put in the query — reaches
// neither the request log's error nor a span.
func TestAPIProxyMalformedAnswersAreNotQuoted(t *testing.T) {
	f, api, env := newAPIFixture(t)
	f.addTenant("acme")
	rec := &recorders{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s := startSidecarWith(t, env, rec.options(), "-default-tenant", "acme")
	const secret = "qs-2b8d4f6a0c"
	for _, m := range []upstreamtest.Malformation{upstreamtest.MissingStatusLine, upstreamtest.HeaderWithoutColon} {
		api.Script(upstreamtest.Step{Malformed: m})
		resp, body := proxied(t, "GET", s.tokenURL+"/proxy/api/v2/users/me?access_token="+secret, nil, nil)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: status %d %s; want 502", m, resp.StatusCode, body)
		}
	}
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}
	logs := s.stderr.String()
	if !strings.Contains(logs, `"code":"UPSTREAM_INVALID_RESPONSE"`) {
		t.Fatalf("no request line for the 502s:\n%s", logs)
	}
	if strings.Contains(logs, secret) || strings.Contains(logs, "malformed HTTP response") {
		t.Errorf("the log quotes the API's answer:\n%s", logs)
	}
	if text := testkit.SpansText(rec.spans.Ended()); strings.Contains(text, secret) || strings.Contains(text, "malformed HTTP response") {
		t.Errorf("the spans quote the API's answer:\n%s", text)
	}
}

// TestSecretsNeverLeaveTheProcess drives every malformed answer the fakes
// can send — no status line, a header line without colon, a short
// Content-Length; from the Tenant Service, the login and the API — plus a
// secret and 900 KB in the region field, through the whole process at the
// default log level with traces and metrics exported over OTLP. Then it
// scans everything the process wrote (stderr, stdout), exported (OTLP
// traces and metrics) and served (/metrics) for every client secret,
// client ID, basic-auth string, token and query token of the run, halves
// of them included; and checks that every line written is JSON of at most
// 8 KiB. The exporters read the process environment, hence t.Setenv (and
// no t.Parallel).
func TestSecretsNeverLeaveTheProcess(t *testing.T) {
	recv := newOTLPReceiver(t)
	env := testkit.OTLPEnv(t, recv.srv.URL, "http/protobuf", map[string]string{"OTEL_METRIC_EXPORT_INTERVAL": "500"})
	f, api, fakeEnv := newAPIFixture(t)
	for k, v := range fakeEnv {
		env[k] = v
	}

	var secrets []string // every value that must not leave the process
	tenant := func(name, region string) {
		id, secret := "cid-"+randomHex(t, 8), "sk-"+randomHex(t, 16)
		if region == "" {
			region = "eu-west-1"
		}
		f.ts.SetCredentials(name, upstreamtest.Credentials{ClientID: id, ClientSecret: secret, Region: region})
		f.login.AddClient(id, secret)
		basic := base64.StdEncoding.EncodeToString([]byte(id + ":" + secret))
		secrets = append(secrets, id, secret, secret[:len(secret)/2], secret[len(secret)/2:], basic)
	}
	modes := []upstreamtest.Malformation{upstreamtest.MissingStatusLine, upstreamtest.HeaderWithoutColon, upstreamtest.ShortContentLength}
	var tenants []string
	for _, m := range modes {
		name := strings.ReplaceAll(m.String(), " ", "-")
		ts, login := "ts-"+name, "login-"+name
		tenant(ts, "")
		tenant(login, "")
		step := upstreamtest.Step{Malformed: m}
		f.ts.Script(ts, "genesys", step, step, step)
		c, _ := f.ts.CredentialsOf(login)
		f.login.Script(c.ClientID, step, step, step)
		tenants = append(tenants, ts, login)
	}
	regionSecret := "rs-" + randomHex(t, 16)
	tenant("region-secret", regionSecret)
	tenant("region-huge", strings.Repeat("eu-west-1 ", 90<<10)+regionSecret)
	tenant("api", "")
	secrets = append(secrets, regionSecret)
	tenants = append(tenants, "region-secret", "region-huge")

	// Breakers off: the faults share one host per upstream, and an open
	// breaker would spare the later ones their malformed answers.
	s := startSidecarWith(t, env, nil, "-breaker-failure-threshold", "0")
	var wg sync.WaitGroup
	for _, name := range tenants {
		wg.Go(func() {
			if a := s.token(t, name); a.Status == http.StatusOK {
				t.Errorf("%s: got a token from a broken upstream", name)
			}
		})
	}
	wg.Wait()

	querySecret := "qs-" + randomHex(t, 16)
	secrets = append(secrets, querySecret, querySecret[:len(querySecret)/2], querySecret[len(querySecret)/2:])
	proxy := func() (*http.Response, []byte) {
		return proxied(t, "GET", s.tokenURL+"/proxy/api/v2/users/me?access_token="+querySecret, nil, http.Header{"X-Tenant-Id": {"api"}})
	}
	if resp, body := proxy(); resp.StatusCode != http.StatusOK {
		t.Fatalf("proxy: status %d %s", resp.StatusCode, body)
	}
	for _, m := range modes {
		api.Script(upstreamtest.Step{Malformed: m})
		proxy()
	}
	// net/http notices the bytes past a short Content-Length on an idle
	// connection by itself; let its readers run before the process stops.
	time.Sleep(200 * time.Millisecond)
	metricsText := fetchMetrics(t, s)
	if err := s.stop(t); err != nil {
		t.Fatal(err)
	}

	for _, name := range tenants {
		if f.ts.Calls(name, "genesys") == 0 {
			t.Errorf("%s: the Tenant Service was never asked", name)
		}
	}
	for _, m := range modes {
		c, _ := f.ts.CredentialsOf("login-" + strings.ReplaceAll(m.String(), " ", "-"))
		if f.login.Calls(c.ClientID) == 0 {
			t.Errorf("login %s: never exchanged", m)
		}
	}
	for _, tok := range f.login.IssuedTokens() {
		secrets = append(secrets, tok, tok[:len(tok)/2], tok[len(tok)/2:])
	}

	stderr, stdout := s.stderr.String(), s.stdout.String()
	lines := checkLines(t, stderr)
	var stdlib bool
	for _, l := range lines {
		stdlib = stdlib || l["logger"] == "stdlib"
		if l["level"] == "DEBUG" {
			t.Errorf("a debug line at the default level: %v", l)
		}
	}
	if !stdlib {
		t.Error("no line of package log (net/http's unsolicited-response line) was routed to the JSON log")
	}
	traces, metrics := recv.bodies("/v1/traces"), recv.bodies("/v1/metrics")
	if len(traces) == 0 || len(metrics) == 0 {
		t.Fatalf("%d trace and %d metric exports; the scan would prove nothing", len(traces), len(metrics))
	}
	where := map[string][]byte{"stderr": []byte(stderr), "stdout": []byte(stdout), "/metrics": []byte(metricsText),
		"traces": bytes.Join(traces, nil), "metrics": bytes.Join(metrics, nil)}
	for what, b := range where {
		for _, secret := range secrets {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds a secret, client ID, basic-auth string or token (%.6s…)", what, secret)
			}
		}
		if bytes.Contains(b, []byte("eu-west-1 eu-west-1 ")) {
			t.Errorf("%s echoes the 900 KB region", what)
		}
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestSpanAttributesAreBounded: whatever sets a span attribute, its value
// is cut to maxSpanAttributeValue characters.
func TestSpanAttributesAreBounded(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tel, err := newTelemetry(context.Background(), func(string) string { return "" }, discardLogger(),
		telemetryOptions{spanProcessors: []sdktrace.SpanProcessor{rec}})
	if err != nil {
		t.Fatal(err)
	}
	defer tel.shutdown(context.Background())
	_, span := tel.tracerProvider.Tracer("test").Start(context.Background(), "s")
	span.SetAttributes(attribute.String("region", strings.Repeat("r", 900<<10)))
	span.End()
	if got := rec.Ended()[0].Attributes()[0].Value.AsString(); len(got) != maxSpanAttributeValue {
		t.Errorf("a span attribute of %d characters", len(got))
	}
}
