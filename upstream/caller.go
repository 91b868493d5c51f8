package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
)

// caller makes the calls to one upstream. It owns all a call goes through:
// the HTTP client (redacting, traced, never following a redirect), the
// per-attempt timeout, the retry policy's settings, one circuit breaker per
// host of the upstream, and the telemetry; classify, the upstream's own
// rule, decides what each attempt means (a result). TenantClient and
// LoginClient each hold one and add only what their requests and answers
// look like.
//
// A caller is immutable after newCaller and safe for concurrent use. Each
// call builds its own failsafe-go retry policy, so that the retry log line
// can carry the tenant.
type caller struct {
	upstream  string // TenantService or GenesysLogin
	exhausted Code   // the code when every attempt failed transiently, or the caller gave up
	classify  classifier

	client  *http.Client
	timeout time.Duration // per attempt, body included; never 0

	maxRetries    int // failsafe-go semantics: 0 = no retry
	backoff       backoffRange
	rateLimit     backoffRange // after a rate limit without Retry-After
	maxRetryAfter time.Duration

	breakers *breakers // nil: no circuit breakers
	tel      *telemetry
	log      *slog.Logger // never nil

	now  func() time.Time
	rand func() float64 // in [0,1)
}

// classifier is an upstream's rule for what one attempt means. It sees the
// whole answer (the body is wiped after it returns unless the result is a
// success) and may note facts of the answer on o (oauthError). c.common
// decides what both upstreams treat alike.
type classifier func(c *caller, o *outcome) result

// callerSpec is what tells the two upstreams' callers apart, beside the
// CallConfig they share. Every field is required but the rate-limit range.
type callerSpec struct {
	upstream       string // TenantService or GenesysLogin
	spanName       string
	exhausted      Code
	classify       classifier
	defaultTimeout time.Duration
	urlTemplate    string // the url.template of the client spans
	// rateLimitMin and rateLimitMax bound the backoff after a rate limit
	// without Retry-After; 0 means 1 s and 8 s.
	rateLimitMin, rateLimitMax time.Duration
}

// newCaller checks cfg and applies its defaults.
func newCaller(cfg CallConfig, s callerSpec) (*caller, error) {
	if cfg.Timeout < 0 {
		return nil, errors.New("upstream: negative " + s.upstream + " Timeout")
	}
	tel, err := newTelemetry(s.upstream, s.spanName, cfg.telemetry())
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	c := &caller{
		upstream:      s.upstream,
		exhausted:     s.exhausted,
		classify:      s.classify,
		client:        newHTTPClient(cfg.HTTPClient, cfg.telemetry(), s.urlTemplate),
		timeout:       orDefault(cfg.Timeout, s.defaultTimeout),
		maxRetries:    cfg.MaxRetries,
		backoff:       backoffRange{orDefault(cfg.BackoffMin, defaultBackoffMin), orDefault(cfg.BackoffMax, defaultBackoffMax)},
		rateLimit:     backoffRange{orDefault(s.rateLimitMin, defaultRateLimitMin), orDefault(s.rateLimitMax, defaultRateLimitMax)},
		maxRetryAfter: orDefault(cfg.MaxRetryAfter, defaultMaxRetryAfter),
		tel:           tel,
		log:           cfg.Logger,
		now:           time.Now,
		rand:          rand.Float64,
	}
	switch {
	case cfg.MaxRetries == 0:
		c.maxRetries = defaultMaxRetries
	case cfg.MaxRetries < 0:
		c.maxRetries = 0
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	for _, b := range []backoffRange{c.backoff, c.rateLimit} {
		if b.min < 0 || b.max < b.min {
			return nil, fmt.Errorf("upstream %s: backoff range %s..%s is invalid", s.upstream, b.min, b.max)
		}
	}
	if c.maxRetryAfter < 0 {
		return nil, fmt.Errorf("upstream %s: negative MaxRetryAfter", s.upstream)
	}
	if c.breakers, err = newBreakers(s.upstream, cfg.Breaker, c.log, c.tel); err != nil {
		return nil, err
	}
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// call makes attempts to host until one succeeds, one fails for good, or the
// retries are spent; build makes each attempt's request. host (see hostKey)
// selects the circuit breaker: each attempt asks it for a permit and has its
// outcome recorded, with tenant, inside the retry policy, so that it counts
// every attempt and an open breaker ends the call at once. Every attempt's
// body is read and closed inside the attempt, so no retried response is ever
// left open (the failsafehttp trap).
//
// On success call returns the successful outcome; the caller parses its body
// and must wipe it. Every other outcome's body is wiped here. On failure the
// error is an *Error. When ctx ends first the *Error wraps ctx.Err(), so
// errors.Is(err, context.Canceled / context.DeadlineExceeded) holds; when the
// breaker refused, errors.Is(err, ErrCircuitOpen) does.
func (c *caller) call(ctx context.Context, tenant, host string, build func(context.Context) (*http.Request, error)) (*outcome, error) {
	cb := c.breakers.forHost(host)
	// last is the latest attempt's outcome: failsafe-go hands back no result
	// when ctx ends, and the error still reports the last answer.
	var last *outcome

	policy := retrypolicy.NewBuilder[*outcome]().
		HandleIf(func(o *outcome, err error) bool { return err != nil || o == nil || !o.res.ok() }).
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
			return o != nil && !o.res.ok() &&
				(!o.res.retry || o.res.retryAfter > c.maxRetryAfter || (cb != nil && cb.IsOpen()))
		}).
		WithMaxRetries(c.maxRetries).
		// No builder jitter: failsafe-go adds it on top of the delay function,
		// which could fire before a server-given Retry-After.
		WithDelayFunc(func(e failsafe.ExecutionAttempt[*outcome]) time.Duration {
			o := e.LastResult() // never nil: only ErrOpen comes without one, and it aborts
			return c.delay(o.res, o.attempt-1)
		}).
		ReturnLastFailure().
		OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[*outcome]) {
			c.retrying(ctx, tenant, e.LastResult(), e.Delay)
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
			o := c.attempt(exec.Context(), build)
			o.attempt = exec.Attempts()
			o.res = c.classify(c, o)
			if !o.res.ok() {
				o.wipe() // judged: only a success's body is read further
			}
			cb.record(p, tenant, o)
			c.tel.attempt(o, time.Since(start))
			last = o
			return o, nil
		})

	attempts := 0
	if last != nil {
		attempts = last.attempt
	}
	setAttempts(ctx, attempts)
	switch {
	case err == nil && final != nil && final.res.ok():
		return final, nil
	case errors.Is(err, circuitbreaker.ErrOpen):
		c.tel.rejected(ctx, host)
		e := c.failure(last, fmt.Errorf("%w for %s", ErrCircuitOpen, host))
		e.RetryAfterHint = max(e.RetryAfterHint, openHint(cb))
		return nil, e
	case err != nil:
		// Otherwise only the caller's context ends an execution with an
		// error; a success it cut off is wiped unread.
		last.wipe()
		return nil, c.failure(last, err)
	case final == nil:
		return nil, c.failure(last, errors.New("no attempt was made"))
	default:
		e := c.failure(final, nil)
		if cb != nil && e.Code == c.exhausted && cb.IsOpen() {
			// The breaker opened on this call or meanwhile: asking again
			// before it half-opens would only be refused.
			e.RetryAfterHint = max(e.RetryAfterHint, openHint(cb))
		}
		return nil, e
	}
}

// retrying logs and measures a retry scheduled after o.
func (c *caller) retrying(ctx context.Context, tenant string, o *outcome, delay time.Duration) {
	c.tel.retry(ctx, tenant, o, o.attempt, delay)
	attrs := []slog.Attr{
		slog.String("upstream", c.upstream),
		slog.String("tenant", tenant),
		slog.Int("attempt", o.attempt),
		slog.Int("status", o.status),
		slog.Duration("delay", delay),
		slog.String("reason", o.res.reason),
	}
	if cause := o.cause(); cause != nil {
		attrs = append(attrs, slog.String("error", cause.Error()))
	}
	c.log.LogAttrs(ctx, slog.LevelWarn, "upstream attempt failed, retrying", attrs...)
}

// failure builds the call's error from its last outcome (nil when no
// attempt was made). stop is the error that ended the execution early (the
// caller's context or an open breaker), or nil.
func (c *caller) failure(last *outcome, stop error) *Error {
	e := &Error{Code: c.exhausted, Upstream: c.upstream}
	if last != nil {
		r := last.res
		e.Attempts = last.attempt
		e.Status = last.status
		e.OAuthError = last.oauthError
		e.Err = last.cause()
		if !r.retry && r.code != "" {
			e.Code = r.code
		}
		if r.retry {
			e.RetryAfterHint = r.retryAfter
			if e.RetryAfterHint == 0 {
				e.RetryAfterHint = c.rangeFor(r).at(last.attempt - 1)
			}
			if r.retryAfter > c.maxRetryAfter {
				e.Err = fmt.Errorf("server asked to retry after %s, beyond the %s cap", r.retryAfter, c.maxRetryAfter)
			}
		}
	}
	if stop != nil {
		// The caller gave up or the breaker refused: whatever the last attempt
		// said, the code is the "unavailable" one, and stop is what errors.Is
		// finds.
		e.Code = c.exhausted
		e.Err = stop
	}
	return e
}

// attempt sends one request built by build under its own deadline and reads
// the whole answer before returning, so that a body that trickles in past
// the deadline counts as a timeout too. It never returns nil.
//
// The per-attempt timeout is a context deadline here rather than a
// failsafe-go timeout policy: that policy discards a result that arrives as
// its timer fires, and with it the chance to close its body and zero the
// secret it holds.
func (c *caller) attempt(ctx context.Context, build func(context.Context) (*http.Request, error)) *outcome {
	actx, cancel := context.WithTimeoutCause(ctx, c.timeout, ErrAttemptTimeout)
	defer cancel()

	req, err := build(actx)
	if err != nil {
		return &outcome{err: err}
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return &outcome{err: c.attemptError(ctx, actx, err)}
	}
	body, err := readCapped(resp.Body, MaxBodyBytes, resp.ContentLength)
	resp.Body.Close()
	o := &outcome{status: resp.StatusCode, header: resp.Header, body: body}
	if err != nil {
		o.err = c.attemptError(ctx, actx, err)
	}
	return o
}

// attemptError tells the caller's cancellation, this attempt's timeout and a
// plain transport failure apart.
func (c *caller) attemptError(ctx, actx context.Context, err error) error {
	switch {
	case errors.Is(err, errBodyTooLarge):
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(context.Cause(actx), ErrAttemptTimeout):
		return fmt.Errorf("%w after %s", ErrAttemptTimeout, c.timeout)
	}
	// Already redacted by the client's transport; again here, so that no
	// path (a transport that returns an error of its own) keeps its text.
	return redactTransportError(err)
}

// invalid is the error of a call whose successful answer o cannot be used
// (UPSTREAM_INVALID_RESPONSE); cause's text must be free of secrets.
func (c *caller) invalid(o *outcome, cause error) *Error {
	return &Error{Code: CodeUpstreamInvalidResponse, Upstream: c.upstream, Status: o.status, Attempts: o.attempt, Err: cause}
}
