package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
)

// Defaults shared by both clients; each config documents its own.
const (
	defaultMaxRetries       = 2
	defaultBackoffMin       = 500 * time.Millisecond
	defaultBackoffMax       = 4 * time.Second
	defaultRateLimitMin     = 1 * time.Second
	defaultRateLimitMax     = 8 * time.Second
	defaultMaxRetryAfter    = 30 * time.Second
	backoffJitterFraction   = 0.2 // ± share of a computed backoff
	retryAfterJitterMax     = 0.1 // + share of a server-given delay, never −
	retryAfterJitterCeiling = time.Second
)

// verdict is what one attempt means for the call. Each upstream's classifier
// fills it; the retry policy, the delay function, the retry log line and the
// final error all read it, so that there is one decision per attempt.
type verdict struct {
	// ok: the attempt succeeded; the body is the answer to parse.
	ok bool
	// retry: the failure is transient and another attempt may succeed.
	retry bool
	// code is the error code when the call ends on this attempt and it is not
	// ok. For a retryable failure the retrier replaces it by the upstream's
	// "unavailable" code.
	code Code
	// reason is a few fixed words for logs ("HTTP 503", "timeout"); never
	// upstream text.
	reason string
	// retryAfter is the server's Retry-After, 0 when absent or unusable.
	retryAfter time.Duration
	// rateLimited selects the rate-limit backoff when there is no Retry-After.
	rateLimited bool
	// oauthError is a Genesys OAuth error word (fixed vocabulary only).
	oauthError string
	// cause becomes Error.Err; its text must be free of secrets.
	cause error
	// hostFault: the host failed (5xx, 408, timeout, network or TLS error),
	// rather than answering this request. Only such attempts count against
	// the host's circuit breaker.
	hostFault bool
}

// retrier runs one logical upstream call as attempts under a failsafe-go
// retry policy. It is immutable after construction and safe for concurrent
// use; every call builds its own policy so that the retry log line can carry
// the tenant.
type retrier struct {
	upstream      string
	exhausted     Code // code when every attempt failed transiently
	maxRetries    int  // failsafe-go semantics: 0 = no retry
	backoff       backoffRange
	rateLimit     backoffRange
	maxRetryAfter time.Duration
	log           *slog.Logger
	tel           *telemetry
	breakers      *breakers // nil: no circuit breakers
	now           func() time.Time
	rand          func() float64 // in [0,1)
}

type backoffRange struct{ min, max time.Duration }

// retrySettings are the config fields both clients share, before defaults.
type retrySettings struct {
	maxRetries                 int
	backoffMin, backoffMax     time.Duration
	rateLimitMin, rateLimitMax time.Duration
	maxRetryAfter              time.Duration
	logger                     *slog.Logger
	// telemetry records attempts and retries; nil means none.
	telemetry *telemetry
	breaker   BreakerConfig
}

func newRetrier(upstream string, exhausted Code, s retrySettings) (retrier, error) {
	r := retrier{
		upstream:      upstream,
		exhausted:     exhausted,
		maxRetries:    s.maxRetries,
		backoff:       backoffRange{orDefault(s.backoffMin, defaultBackoffMin), orDefault(s.backoffMax, defaultBackoffMax)},
		rateLimit:     backoffRange{orDefault(s.rateLimitMin, defaultRateLimitMin), orDefault(s.rateLimitMax, defaultRateLimitMax)},
		maxRetryAfter: orDefault(s.maxRetryAfter, defaultMaxRetryAfter),
		log:           s.logger,
		tel:           s.telemetry,
		now:           time.Now,
		rand:          rand.Float64,
	}
	switch {
	case s.maxRetries == 0:
		r.maxRetries = defaultMaxRetries
	case s.maxRetries < 0:
		r.maxRetries = 0
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.tel == nil {
		tel, err := newTelemetry(upstream, upstream, telemetryConfig{})
		if err != nil {
			return retrier{}, err
		}
		r.tel = tel
	}
	for _, b := range []backoffRange{r.backoff, r.rateLimit} {
		if b.min < 0 || b.max < b.min {
			return retrier{}, fmt.Errorf("upstream %s: backoff range %s..%s is invalid", upstream, b.min, b.max)
		}
	}
	if r.maxRetryAfter < 0 {
		return retrier{}, fmt.Errorf("upstream %s: negative MaxRetryAfter", upstream)
	}
	b, err := newBreakers(upstream, s.breaker, r.log, r.tel)
	if err != nil {
		return retrier{}, err
	}
	r.breakers = b
	return r, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// run makes attempts to host until one succeeds, one fails for good, or the
// retries are spent. host (see hostKey) selects the circuit breaker: each
// attempt asks it for a permit and has its outcome recorded, with tenant,
// inside the retry policy, so that it counts every attempt and an open
// breaker ends the call at once. attempt must return a non-nil outcome whose
// body is already read and closed and whose verdict is set; because every body is consumed inside
// its attempt, no retried response is ever left open (the failsafehttp trap).
//
// On success run returns the successful outcome; the caller parses its body
// and must wipe it. Every other outcome's body is wiped here. On failure the
// error is an *Error. When ctx ends first the *Error wraps ctx.Err(), so
// errors.Is(err, context.Canceled / context.DeadlineExceeded) holds; when the
// breaker refused, errors.Is(err, ErrCircuitOpen) does.
func (r *retrier) run(ctx context.Context, tenant, host string, attempt func(context.Context) *outcome) (*outcome, error) {
	var seen []*outcome // every attempt's outcome, in order; failsafe calls us sequentially
	cb := r.breakers.forHost(host)

	policy := retrypolicy.NewBuilder[*outcome]().
		HandleIf(func(o *outcome, err error) bool { return err != nil || o == nil || !o.verdict.ok }).
		// A Retry-After beyond the cap ends the call at once: waiting less
		// than the server asked would be retrying early, waiting longer would
		// hold the caller too long. The hint travels in the error instead.
		//
		// An open breaker ends it too: retrying circuitbreaker.ErrOpen would
		// only wait out a backoff to be refused again, and so would retrying
		// the failure that just opened the breaker.
		AbortIf(func(o *outcome, err error) bool {
			if errors.Is(err, circuitbreaker.ErrOpen) {
				return true
			}
			return o != nil && !o.verdict.ok &&
				(!o.verdict.retry || o.verdict.retryAfter > r.maxRetryAfter || (cb != nil && cb.IsOpen()))
		}).
		WithMaxRetries(r.maxRetries).
		// No builder jitter: failsafe-go adds it on top of the delay function,
		// which could fire before a server-given Retry-After.
		WithDelayFunc(func(e failsafe.ExecutionAttempt[*outcome]) time.Duration {
			return r.delay(e.LastResult(), len(seen)-1)
		}).
		ReturnLastFailure().
		OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[*outcome]) {
			o := e.LastResult()
			r.tel.retry(ctx, tenant, o, len(seen), e.Delay)
			attrs := []slog.Attr{
				slog.String("upstream", r.upstream),
				slog.String("tenant", tenant),
				slog.Int("attempt", len(seen)),
				slog.Int("status", o.status),
				slog.Duration("delay", e.Delay),
				slog.String("reason", o.verdict.reason),
			}
			if o.verdict.cause != nil {
				attrs = append(attrs, slog.String("error", o.verdict.cause.Error()))
			}
			r.log.LogAttrs(ctx, slog.LevelWarn, "upstream attempt failed, retrying", attrs...)
		}).
		Build()

	final, err := failsafe.With[*outcome](policy).WithContext(ctx).
		GetWithExecution(func(exec failsafe.Execution[*outcome]) (*outcome, error) {
			// The breaker is asked inside the retry: one permit and one
			// count per attempt.
			p, ok := cb.acquire()
			if !ok {
				return nil, circuitbreaker.ErrOpen
			}
			start := time.Now()
			o := attempt(exec.Context())
			cb.record(p, tenant, o)
			r.tel.attempt(o, time.Since(start))
			seen = append(seen, o)
			o.attempt = len(seen)
			return o, nil
		})

	for _, o := range seen {
		if o != final || err != nil || !o.verdict.ok {
			o.wipe()
		}
	}
	attempts(ctx, len(seen))
	var last *outcome
	if len(seen) > 0 {
		last = seen[len(seen)-1]
	}
	switch {
	case errors.Is(err, circuitbreaker.ErrOpen):
		r.tel.rejected(ctx, host)
		e := r.failure(last, len(seen), fmt.Errorf("%w for %s", ErrCircuitOpen, host))
		e.RetryAfterHint = max(e.RetryAfterHint, openHint(cb))
		return nil, e
	case err != nil:
		// Otherwise only the caller's context ends an execution with an error.
		return nil, r.failure(last, len(seen), err)
	case final == nil:
		return nil, r.failure(last, len(seen), errors.New("no attempt was made"))
	case final.verdict.ok:
		return final, nil
	default:
		e := r.failure(final, len(seen), nil)
		if cb != nil && e.Code == r.exhausted && cb.IsOpen() {
			// The breaker opened on this call or meanwhile: asking again
			// before it half-opens would only be refused.
			e.RetryAfterHint = max(e.RetryAfterHint, openHint(cb))
		}
		return nil, e
	}
}

// failure builds the call's error from its last outcome. stop is the error
// that ended the execution early (the caller's context or an open breaker),
// or nil.
func (r *retrier) failure(last *outcome, attempts int, stop error) *Error {
	e := &Error{Code: r.exhausted, Upstream: r.upstream, Attempts: attempts}
	if last != nil {
		e.Status = last.status
		v := last.verdict
		e.OAuthError = v.oauthError
		e.Err = v.cause
		if !v.retry && v.code != "" {
			e.Code = v.code
		}
		if v.retry {
			e.RetryAfterHint = v.retryAfter
			if e.RetryAfterHint == 0 {
				e.RetryAfterHint = r.rangeFor(v).at(attempts - 1)
			}
			if v.retryAfter > r.maxRetryAfter {
				e.Err = fmt.Errorf("server asked to retry after %s, beyond the %s cap", v.retryAfter, r.maxRetryAfter)
			}
		}
	}
	if stop != nil {
		// The caller gave up or the breaker refused: whatever the last attempt
		// said, the code is the "unavailable" one, and stop is what errors.Is
		// finds.
		e.Code = r.exhausted
		e.Err = stop
	}
	return e
}

func (r *retrier) rangeFor(v verdict) backoffRange {
	if v.rateLimited {
		return r.rateLimit
	}
	return r.backoff
}

// delay is the wait before retry number retry+1 (0-based: the first retry
// has retry == 0). A server-given Retry-After is honoured exactly plus a small
// positive jitter (never minus, so never early); otherwise exponential
// backoff with ±20 % jitter, never above the range's max.
func (r *retrier) delay(o *outcome, retry int) time.Duration {
	if o != nil && o.verdict.retryAfter > 0 {
		ra := o.verdict.retryAfter
		extra := min(time.Duration(r.rand()*retryAfterJitterMax*float64(ra)), retryAfterJitterCeiling)
		return ra + extra
	}
	var v verdict
	if o != nil {
		v = o.verdict
	}
	b := r.rangeFor(v)
	d := b.at(retry)
	d += time.Duration((r.rand()*2 - 1) * backoffJitterFraction * float64(d))
	return min(max(d, 0), b.max)
}

// at is the un-jittered exponential backoff before retry number retry+1:
// min, 2·min, 4·min … capped at max.
func (b backoffRange) at(retry int) time.Duration {
	d := b.min
	for i := 0; i < retry && d < b.max; i++ {
		d *= 2
	}
	return min(d, b.max)
}

// retryAfter reads a Retry-After header in either form RFC 9110 allows:
// delay-seconds or an HTTP-date. It returns 0 when the header is absent,
// malformed or not in the future, so that the caller falls back to its own
// backoff. Absurd values saturate rather than overflow; the cap is applied
// by the caller, which needs the true value for its error hint.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if isDigits(v) {
		secs, err := strconv.ParseInt(v, 10, 64)
		if err != nil || secs > int64(maxRetryAfterValue/time.Second) {
			return maxRetryAfterValue // all digits but overflowing: "very long"
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, maxRetryAfterValue) // a date centuries ahead saturates too
}

// maxRetryAfterValue bounds a parsed Retry-After so that arithmetic on it
// cannot overflow; any such value is far beyond every sensible cap.
const maxRetryAfterValue = 365 * 24 * time.Hour

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// transientVerdict classifies what both upstreams treat alike: transport
// failures, per-attempt timeouts, oversized bodies, 408, 429 and 5xx. The
// second result is false when the outcome is an HTTP answer the upstream's
// own classifier must judge.
func (r *retrier) transientVerdict(o *outcome) (verdict, bool) {
	switch {
	case o.err != nil && errors.Is(o.err, errBodyTooLarge):
		return verdict{code: CodeUpstreamInvalidResponse, reason: "body too large", cause: errBodyTooLarge}, true
	case o.err != nil && errors.Is(o.err, ErrAttemptTimeout):
		return verdict{retry: true, hostFault: true, reason: "timeout", cause: o.err}, true
	case o.err != nil && (errors.Is(o.err, context.Canceled) || errors.Is(o.err, context.DeadlineExceeded)):
		// The caller's context: failsafe-go stops on it before this matters.
		return verdict{reason: "canceled", code: r.exhausted, cause: o.err}, true
	// From here on o.err is a transportError (redactingTransport): its text
	// is a fixed reason, never what the upstream sent.
	case o.err != nil && isUntrustedCertificate(o.err):
		// A TLS trust failure will not heal by retrying within seconds.
		return verdict{code: r.exhausted, hostFault: true, reason: "tls", cause: o.err}, true
	case o.err != nil:
		return verdict{retry: true, hostFault: true, reason: "network error", cause: o.err}, true
	case o.status == http.StatusTooManyRequests:
		return verdict{retry: true, rateLimited: true, reason: "HTTP 429", retryAfter: retryAfter(o.header, r.now())}, true
	case o.status == http.StatusRequestTimeout:
		return verdict{retry: true, hostFault: true, reason: "HTTP 408", retryAfter: retryAfter(o.header, r.now())}, true
	case o.status >= 500:
		return verdict{retry: true, hostFault: true, reason: "HTTP " + strconv.Itoa(o.status), retryAfter: retryAfter(o.header, r.now())}, true
	}
	return verdict{}, false
}
