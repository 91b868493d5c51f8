package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
)

// net/http quotes what a server sent in its errors: `malformed HTTP
// response "…"` repeats a first line that was no status line, `malformed
// MIME header line: "…"` a header line without a colon — bytes of a body
// that holds a client secret or an access token. So no error text of the
// transport layer ever leaves this file: redactingTransport, at the bottom
// of every client's HTTP stack (below otelhttp, which records an error's
// text as the span status), replaces each by a transportError that says
// what kind of failure it was in fixed words.

// transportError is a transport failure told by a fixed reason. It never
// holds the transport's own error or any byte an upstream sent. It
// implements net.Error, so that timeouts still read as timeouts.
type transportError struct {
	// reason is a few fixed words ("malformed HTTP answer").
	reason  string
	timeout bool
	// cert: the server's certificate was not trusted (no retry heals it).
	cert bool
}

func (e *transportError) Error() string   { return e.reason }
func (e *transportError) Timeout() bool   { return e.timeout }
func (e *transportError) Temporary() bool { return e.timeout }

// Redacted reports that the error's text is fixed words, safe to log: code
// that must not import this package (proxy) looks for this method.
func (e *transportError) Redacted() bool { return true }

// redactTransportError maps a transport failure to a transportError. The
// caller's context errors and ErrAttemptTimeout pass as they are: their
// texts are fixed, and the caller tells them apart with errors.Is. nil
// stays nil.
func redactTransportError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrAttemptTimeout):
		return err
	case errors.Is(err, errBodyTooLarge):
		return errBodyTooLarge
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text holds the URL too
	}
	var te *transportError
	if errors.As(err, &te) {
		return te
	}
	return &transportError{reason: transportReason(err), timeout: isTimeout(err), cert: isCertificateError(err)}
}

// isUntrustedCertificate reports a certificate failure, redacted or not.
func isUntrustedCertificate(err error) bool {
	var te *transportError
	return (errors.As(err, &te) && te.cert) || isCertificateError(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// transportReason is the fixed description of a transport failure. The
// error's text is looked at, never copied: net/http's parse errors have no
// type of their own.
func transportReason(err error) string {
	var dns *net.DNSError
	var op *net.OpError
	var rec tls.RecordHeaderError
	var alert tls.AlertError
	msg := err.Error()
	switch {
	case isCertificateError(err):
		return "TLS certificate not trusted"
	case errors.As(err, &dns):
		return "DNS lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case isTimeout(err):
		return "network timeout"
	case errors.As(err, &rec), errors.As(err, &alert), strings.Contains(msg, "tls: "):
		return "TLS handshake failed"
	case errors.As(err, &op) && op.Op == "dial":
		return "connection failed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), strings.Contains(msg, "server closed idle connection"):
		return "connection closed before the answer was complete"
	case strings.Contains(msg, "malformed"), strings.Contains(msg, "bad Content-Length"),
		strings.Contains(msg, "invalid "), strings.Contains(msg, "unexpected "), strings.Contains(msg, "too long"):
		return "malformed HTTP answer"
	}
	return "network error"
}

// RedactingTransport returns base with every failure, and every failure
// to read the body of one of its answers, replaced by an error whose text
// is a fixed reason ("malformed HTTP answer", "connection refused",
// "network timeout"…) and which has a method Redacted() bool. Timeouts
// still satisfy net.Error's Timeout, and the caller's context errors pass
// as they are. Put it below any instrumentation that records an error's
// text (otelhttp's span status): the upstream clients do, and cmd does for
// the API proxy.
func RedactingTransport(base http.RoundTripper) http.RoundTripper {
	return redactingTransport{base}
}

// redactingTransport returns every failure of base, and of reading the
// bodies of its answers, as a transportError (see redactTransportError).
type redactingTransport struct {
	base http.RoundTripper
}

func (t redactingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return nil, redactTransportError(err)
	}
	if resp.Body != nil {
		resp.Body = redactingBody{resp.Body}
	}
	return resp, nil
}

// redactingBody is an answer's body whose read errors are redacted; io.EOF
// passes as it is.
type redactingBody struct {
	io.ReadCloser
}

func (b redactingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		err = redactTransportError(err)
	}
	return n, err
}
