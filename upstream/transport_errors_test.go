package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/token-sidecar/token-sidecar/internal/testkit"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// TestMalformedAnswersAreNotQuoted: net/http quotes the bytes of a broken
// answer in its errors. Whatever an upstream sends, the call's error, the
// retry lines and the spans hold a fixed reason, never those bytes (here a
// client secret, client ID or token).
func TestMalformedAnswersAreNotQuoted(t *testing.T) {
	modes := []upstreamtest.Malformation{upstreamtest.MissingStatusLine, upstreamtest.HeaderWithoutColon, upstreamtest.ShortContentLength}
	for _, m := range modes {
		for _, side := range []string{"tenant service", "login"} {
			t.Run(side+" "+m.String(), func(t *testing.T) {
				t.Parallel()
				f := newTelemetryFixture(t, false)
				step := upstreamtest.Step{Malformed: m}
				if side == "tenant service" {
					f.ts.Script("acme", "genesys", step, step, step)
				} else {
					f.login.Script(pipeID, step, step, step)
				}
				_, err := f.p.Issue(context.Background(), "genesys", "acme")
				if err == nil {
					t.Fatal("a malformed answer gave a token")
				}
				if err := f.tp.ForceFlush(context.Background()); err != nil {
					t.Fatal(err)
				}
				secrets := append([]string{pipeSecret, pipeID}, f.login.IssuedTokens()...)
				for _, tok := range f.login.IssuedTokens() {
					secrets = append(secrets, tok[:len(tok)/2], tok[len(tok)/2:])
				}
				assertNoSecrets(t, "the error", err.Error(), secrets...)
				assertNoSecrets(t, "the log", f.logs.String(), secrets...)
				assertNoSecrets(t, "the spans", testkit.SpansText(f.spans.Ended()), secrets...)
				for _, quoted := range []string{"malformed HTTP response \"", "malformed MIME header line: \""} {
					if strings.Contains(err.Error()+f.logs.String()+testkit.SpansText(f.spans.Ended()), quoted) {
						t.Errorf("the error, log or spans quote the answer (%q): %v\n%s", quoted, err, f.logs.String())
					}
				}
			})
		}
	}
}

// TestMalformedAnswersHaveAReason: the retry line names the failure in
// fixed words.
func TestMalformedAnswersHaveAReason(t *testing.T) {
	for _, m := range []upstreamtest.Malformation{upstreamtest.MissingStatusLine, upstreamtest.HeaderWithoutColon} {
		f := newPipelineFixture(t)
		step := upstreamtest.Step{Malformed: m}
		f.ts.Script("acme", "genesys", step, step, step)
		_, err := f.p.Issue(context.Background(), "genesys", "acme")
		asError(t, err, CodeTenantServiceUnavailable)
		if !strings.HasSuffix(err.Error(), ": malformed HTTP answer") {
			t.Errorf("%s: error %q", m, err)
		}
		if !strings.Contains(f.logs.String(), `"reason":"network error","error":"malformed HTTP answer"`) {
			t.Errorf("%s: retry lines %s", m, f.logs.String())
		}
	}
}

func TestRedactTransportError(t *testing.T) {
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: "http://ts/tenants/acme?q=secret", Err: err} }
	for _, tc := range []struct {
		err  error
		want string
	}{
		{wrap(errors.New(`net/http: HTTP/1.x transport connection broken: malformed HTTP response "{\"clientSecret\":\"s\"}"`)), "malformed HTTP answer"},
		{wrap(textproto.ProtocolError(`malformed MIME header line: "clientSecret s"`)), "malformed HTTP answer"},
		{wrap(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), "connection refused"},
		{wrap(&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}), "connection reset"},
		{wrap(&net.DNSError{Err: "no such host", Name: "ts"}), "DNS lookup failed"},
		{wrap(io.ErrUnexpectedEOF), "connection closed before the answer was complete"},
		{wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "TLS certificate not trusted"},
		{wrap(errors.New(`http2: server sent GOAWAY and closed the connection; debug="s3cr3t"`)), "network error"},
	} {
		got := redactTransportError(tc.err)
		if got.Error() != tc.want {
			t.Errorf("%v → %q, want %q", tc.err, got, tc.want)
		}
	}
	for _, kept := range []error{context.Canceled, context.DeadlineExceeded, ErrAttemptTimeout} {
		if got := redactTransportError(kept); got != kept {
			t.Errorf("%v became %v", kept, got)
		}
	}
	if !isUntrustedCertificate(redactTransportError(wrap(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "evil.example"}))) {
		t.Error("a redacted certificate error is no longer one")
	}
	timeout := redactTransportError(wrap(&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}))
	var ne net.Error
	if !errors.As(timeout, &ne) || !ne.Timeout() || timeout.Error() != "network timeout" {
		t.Errorf("a network timeout became %v", timeout)
	}
}
