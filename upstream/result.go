package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// result is what one attempt means for its call, as the upstream's
// classifier decides it: the one decision the retry policy, the backoff,
// the breaker, the retry log line, the metrics and the call's error all
// read. The zero value is a success.
type result struct {
	// code is the call's error code when it ends on this attempt; "" for a
	// success and for a transient failure, which ends the call with the
	// upstream's "unavailable" code once the retries are spent.
	code Code
	// retry: the failure is transient and another attempt may succeed.
	retry bool
	// hostFault: the host failed (5xx, 408, timeout, network or TLS error)
	// rather than answering this request. Only such attempts count against
	// the host's circuit breaker.
	hostFault bool
	// retryAfter is the server's Retry-After; 0 when absent or unusable.
	retryAfter time.Duration
	// reason is a few fixed words for logs and metric labels ("HTTP 503",
	// "timeout"); never upstream text. "" for a success.
	reason string
}

// ok reports a success: the body is the answer to parse.
func (r result) ok() bool { return r.code == "" && !r.retry }

// rateLimited reports a transient failure that is not the host's: the host
// limiting this client (429, Genesys's rate-limit 400), which backs off by
// the rate-limit range when there is no Retry-After.
func (r result) rateLimited() bool { return r.retry && !r.hostFault }

// cause is what becomes the call's Error.Err when it ends on o: the
// attempt's error (its text is redacted), or the status a client cannot
// read. Nil for an answer the code says all about.
func (o *outcome) cause() error {
	switch {
	case errors.Is(o.err, errBodyTooLarge):
		return errBodyTooLarge
	case o.err != nil:
		return o.err
	case o.res.code == CodeUpstreamInvalidResponse:
		return fmt.Errorf("unexpected HTTP %d", o.status)
	}
	return nil
}

// common classifies what both upstreams treat alike: transport failures,
// per-attempt timeouts, oversized bodies, 408, 429 and 5xx. The second
// result is false when the outcome is an HTTP answer the upstream's own
// classifier must judge.
func (c *caller) common(o *outcome) (result, bool) {
	switch {
	case o.err != nil && errors.Is(o.err, errBodyTooLarge):
		return result{code: CodeUpstreamInvalidResponse, reason: "body too large"}, true
	case o.err != nil && errors.Is(o.err, ErrAttemptTimeout):
		return result{retry: true, hostFault: true, reason: "timeout"}, true
	case o.err != nil && (errors.Is(o.err, context.Canceled) || errors.Is(o.err, context.DeadlineExceeded)):
		// The caller's context: failsafe-go stops on it before this matters.
		return result{code: c.exhausted, reason: "canceled"}, true
	// From here on o.err is a transportError (redactingTransport): its text
	// is a fixed reason, never what the upstream sent.
	case o.err != nil && isUntrustedCertificate(o.err):
		// A TLS trust failure will not heal by retrying within seconds.
		return result{code: c.exhausted, hostFault: true, reason: "tls"}, true
	case o.err != nil:
		return result{retry: true, hostFault: true, reason: "network error"}, true
	case o.status == http.StatusTooManyRequests:
		return result{retry: true, reason: "HTTP 429", retryAfter: retryAfter(o.header, c.now())}, true
	case o.status == http.StatusRequestTimeout:
		return result{retry: true, hostFault: true, reason: "HTTP 408", retryAfter: retryAfter(o.header, c.now())}, true
	case o.status >= 500:
		return result{retry: true, hostFault: true, reason: "HTTP " + strconv.Itoa(o.status), retryAfter: retryAfter(o.header, c.now())}, true
	}
	return result{}, false
}
