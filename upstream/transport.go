package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// MaxBodyBytes caps every upstream response body the clients read (1 MiB).
// A longer success body is an UPSTREAM_INVALID_RESPONSE; a longer error body
// is cut off and its connection closed rather than drained.
const MaxBodyBytes = 1 << 20

// ErrAttemptTimeout is the cause of an attempt that ran out of its
// per-attempt timeout (TenantClientConfig.Timeout, LoginClientConfig.Timeout).
// It is deliberately not context.DeadlineExceeded: that error means the
// caller's own context ended.
var ErrAttemptTimeout = errors.New("attempt timed out")

var errBodyTooLarge = fmt.Errorf("response body exceeds %d bytes", MaxBodyBytes)

// outcome is one attempt, fully read: the response body is consumed (up to
// MaxBodyBytes) and closed before the outcome exists.
type outcome struct {
	status int
	header http.Header
	body   []byte
	// err is a transport failure, ErrAttemptTimeout, errBodyTooLarge, or the
	// caller's context error; nil when an answer was read in full.
	err error
	// res is the upstream's classifier's decision on this attempt.
	res result
	// oauthError is the OAuth error word a Genesys 4xx answer named (RFC
	// 6749's vocabulary only, see isOAuthErrorWord); "" for every other
	// answer. The login classifier sets it.
	oauthError string
	// attempt is this outcome's 1-based attempt number.
	attempt int
}

// wipe zeroes the body: a Tenant Service body holds a client secret, a
// Genesys body an access token.
func (o *outcome) wipe() {
	if o != nil {
		clear(o.body)
		o.body = nil
	}
}

// newHTTPClient is the one place where the clients' HTTP stack is built.
// With telemetry it puts an otelhttp transport under the retry loop, so that
// every attempt is one HTTP client span carrying the trace context
// (traceparent) to the upstream; urlTemplate names those spans.
//
// Every error of the transport, and of reading an answer's body, is
// redacted to a fixed reason (redactingTransport): net/http quotes the
// bytes of a malformed answer in its errors.
//
// The given client is copied, never modified. Redirects are never followed:
// a redirected Tenant Service call would carry X-Service-Name and receive a
// secret from wherever it was sent, and a redirected token POST would turn
// into a GET or re-send the Basic credentials. A 3xx is an invalid answer.
func newHTTPClient(c *http.Client, tel telemetryConfig, urlTemplate string) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	} else {
		out.Transport = defaultTransport()
	}
	base := out.Transport
	if base == nil {
		base = http.DefaultTransport // what the given client would use
	}
	// Redacted below otelhttp, which records an error's text on its span.
	out.Transport = redactingTransport{base}
	if tel.instrumented() {
		out.Transport = wrapTransport(out.Transport, tel, urlTemplate)
	}
	out.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &out
}

// idleConnsPerHost is how many idle keep-alive connections the default
// transport keeps per upstream host: as many as the cache runs fetches at
// once by default (-max-concurrent-fetches), so that concurrent misses
// reuse connections instead of opening one per call (net/http keeps 2;
// bench/README.md, issue 6, has the measurement).
const idleConnsPerHost = 64

// defaultTransport is a clone of http.DefaultTransport, so it honours
// HTTPS_PROXY / HTTP_PROXY / NO_PROXY and keeps its pooling and timeouts,
// without sharing its connection pool with the rest of the process.
func defaultTransport() http.RoundTripper {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		t = &http.Transport{Proxy: http.ProxyFromEnvironment}
	} else {
		t = t.Clone()
	}
	t.MaxIdleConnsPerHost = idleConnsPerHost
	t.MaxIdleConns = 4 * idleConnsPerHost
	return t
}

// readCapped reads r to EOF into a buffer it owns, failing with
// errBodyTooLarge beyond limit bytes. Unlike io.ReadAll it zeroes every
// buffer it outgrows, so no partial copy of a secret is left behind in the
// heap (best effort: the transport's own buffers are out of reach). hint is
// the Content-Length, or -1.
func readCapped(r io.Reader, limit int64, hint int64) ([]byte, error) {
	size := int64(512)
	if hint >= 0 {
		size = min(hint, limit) + 1 // +1: EOF is seen without growing
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			grown := make([]byte, len(buf), min(2*int64(cap(buf)), limit+1))
			copy(grown, buf)
			clear(buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			clear(buf)
			return nil, errBodyTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			clear(buf)
			return nil, err
		}
	}
}

func isCertificateError(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname)
}

// parseBaseURL checks an upstream base URL: absolute http(s), a host, no
// user info (a password in a URL would end up in places we do not control),
// no query or fragment. A trailing slash is dropped.
func parseBaseURL(field, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// Not quoting raw: a malformed URL may still hold a password.
		return nil, fmt.Errorf("%s is not a valid URL", field)
	}
	switch {
	case u.User != nil:
		return nil, fmt.Errorf("%s must not contain user info", field)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%s %q must be an absolute http or https URL", field, raw)
	case u.Host == "":
		return nil, fmt.Errorf("%s %q has no host", field, raw)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("%s %q must not have a query or fragment", field, raw)
	}
	u.Path = trimSlash(u.Path)
	u.RawPath = trimSlash(u.RawPath)
	return u, nil
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// joinPath appends already-escaped segments to base, keeping the escaped
// form on the wire (RawPath) so that "../x" travels as "..%2Fx".
func joinPath(base *url.URL, segments ...string) *url.URL {
	u := *base
	path, raw := u.Path, u.EscapedPath()
	for _, s := range segments {
		path += "/" + s
		raw += "/" + url.PathEscape(s)
	}
	u.Path, u.RawPath = path, raw
	return &u
}
