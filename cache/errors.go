package cache

import (
	"errors"
	"fmt"
	"time"
)

// The HTTP layer reads the errors of this file through one-method
// interfaces: ErrorCode() string (a contract error code) and
// RetryAfter() time.Duration (a hint for the Retry-After of a 503).

// coded is an error that names its contract error code.
type coded interface{ ErrorCode() string }

// hasCode reports whether err, or an error it wraps, names its code.
func hasCode(err error) bool {
	var c coded
	return errors.As(err, &c)
}

// codeUnavailable is the contract's code for a fetch that could not run or
// finish: the Tenant Service is the first upstream every fetch calls.
const codeUnavailable = "TENANT_SERVICE_UNAVAILABLE"

// ExpiredTokenError reports a freshly fetched token that was already inside
// its safety margin when it arrived. Its code is the contract's
// UPSTREAM_INVALID_RESPONSE: the upstream granted a lifetime too short to
// use.
type ExpiredTokenError struct {
	Provider, Tenant string
	Lifetime         time.Duration
}

func (e *ExpiredTokenError) Error() string {
	return fmt.Sprintf("cache: the %s token fetched for tenant %q (lifetime %s) was inside its safety margin on arrival",
		e.Provider, e.Tenant, e.Lifetime)
}

// ErrorCode is read by the HTTP layer through a one-method interface.
func (e *ExpiredTokenError) ErrorCode() string { return "UPSTREAM_INVALID_RESPONSE" }

// UnavailableError reports a shared fetch that stopped without an answer
// from the Source: it waited FetchTimeout for a fetch slot, or the Source
// ran out of FetchTimeout without saying why. Every caller of that fetch
// gets it, so it is a 503 TENANT_SERVICE_UNAVAILABLE with Retry-After, not
// a caller's own TIMEOUT: the fetch does not go on.
type UnavailableError struct {
	Provider, Tenant string
	// Why is a few fixed words for logs.
	Why string
	// Err is the Source's or the context's error, if any.
	Err error
	// RetryAfterHint is the Retry-After to suggest; zero leaves it to the
	// HTTP layer's default.
	RetryAfterHint time.Duration
}

func (e *UnavailableError) Error() string {
	s := fmt.Sprintf("cache: no %s token for tenant %q: %s", e.Provider, e.Tenant, e.Why)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// ErrorCode is TENANT_SERVICE_UNAVAILABLE.
func (e *UnavailableError) ErrorCode() string { return codeUnavailable }

// RetryAfter is RetryAfterHint.
func (e *UnavailableError) RetryAfter() time.Duration { return e.RetryAfterHint }

// RefreshLimitedError is the answer to a forced refresh inside
// MinRefreshInterval when that interval's forced exchange failed: its error
// again, with no upstream call, and a Retry-After up to the interval's end.
type RefreshLimitedError struct {
	Provider, Tenant string
	// Err is the error of the interval's forced exchange.
	Err error
	// Until is when the next forced exchange may start.
	Until time.Time
	// RetryAfterHint is the time left until Until when the error was made.
	RetryAfterHint time.Duration
}

func (e *RefreshLimitedError) Error() string {
	return fmt.Sprintf("cache: the forced refresh of the %s token of tenant %q failed less than the minimum refresh interval ago (next one at %s): %v",
		e.Provider, e.Tenant, e.Until.UTC().Format(time.RFC3339), e.Err)
}

func (e *RefreshLimitedError) Unwrap() error { return e.Err }

// ErrorCode is the code of the interval's error, TENANT_SERVICE_UNAVAILABLE
// when it has none: a transient failure stays a 503.
func (e *RefreshLimitedError) ErrorCode() string {
	var c coded
	if errors.As(e.Err, &c) {
		return c.ErrorCode()
	}
	return codeUnavailable
}

// RetryAfter is the time left in the interval.
func (e *RefreshLimitedError) RetryAfter() time.Duration { return e.RetryAfterHint }
