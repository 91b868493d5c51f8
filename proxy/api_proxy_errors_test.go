package proxy

import (
	"errors"
	"log"
	"log/slog"
	"net/url"
	"strings"
	"testing"
)

type redactedErr struct{}

func (redactedErr) Error() string  { return "malformed HTTP answer" }
func (redactedErr) Redacted() bool { return true }

// TestAPICallErrorNeverQuotesTheTransport: the request log's error for a
// failed API request holds fixed words, whatever the transport said.
func TestAPICallErrorNeverQuotesTheTransport(t *testing.T) {
	const secret = "tok-5a4b3c2d1e"
	raw := &url.Error{Op: "Get", URL: "https://api.example/x?access_token=" + secret,
		Err: errors.New(`net/http: HTTP/1.x transport connection broken: malformed HTTP response "{\"token\":\"` + secret + `\"}"`)}
	call := &apiCall{}
	for _, err := range []error{raw, &url.Error{Op: "Get", URL: raw.URL, Err: redactedErr{}}} {
		got := apiCallError(&apiCall{key: call.key, err: err})
		var ae *apiError
		if !errors.As(got, &ae) || ae.code != codeUpstreamInvalidResponse {
			t.Fatalf("%v → %v", err, got)
		}
		if strings.Contains(got.Error(), secret) || strings.Contains(got.Error(), "malformed HTTP response") {
			t.Errorf("the error quotes the transport: %v", got)
		}
	}
	if got := apiCallError(&apiCall{err: &url.Error{Op: "Get", URL: raw.URL, Err: redactedErr{}}}); !strings.HasSuffix(got.Error(), "API request: malformed HTTP answer") {
		t.Errorf("a redacted error's fixed reason was not kept: %v", got)
	}
}

func TestReverseProxyLogQuotesNothing(t *testing.T) {
	var buf strings.Builder
	l := reverseProxyLog{slog.New(slog.NewJSONHandler(&buf, nil))}
	log.New(l, "", 0).Printf("httputil: ReverseProxy read error during body copy: %v", `malformed chunk "tok-5a4b3c2d1e"`)
	log.New(l, "", 0).Printf("suppressing panic for copyResponse error in test; copy error: %s", "tok-5a4b3c2d1e")
	out := buf.String()
	if strings.Contains(out, "tok-5a4b3c2d1e") || !strings.Contains(out, `"msg":"httputil: reading the API's answer failed while copying it"`) {
		t.Errorf("ReverseProxy log:\n%s", out)
	}
}
