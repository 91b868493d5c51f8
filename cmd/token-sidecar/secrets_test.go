package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// spansText is everything the spans hold as text: names, status
// descriptions, attributes, and events with theirs.
func spansText(spans []sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintln(&b, s.Name(), s.Status().Description)
		for _, a := range s.Attributes() {
			fmt.Fprintln(&b, a.Key, a.Value.Emit())
		}
		for _, e := range s.Events() {
			fmt.Fprintln(&b, e.Name)
			for _, a := range e.Attributes {
				fmt.Fprintln(&b, a.Key, a.Value.Emit())
			}
		}
	}
	return b.String()
}

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
	if text := spansText(rec.spans.Ended()); strings.Contains(text, secret) {
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
	if text := spansText(rec.spans.Ended()); strings.Contains(text, secret) || strings.Contains(text, "malformed HTTP response") {
		t.Errorf("the spans quote the API's answer:\n%s", text)
	}
	_ = context.Background
}
