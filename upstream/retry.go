package upstream

import (
	"net/http"
	"strconv"
	"strings"
	"time"
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

// backoffRange bounds an exponential backoff: min before the first retry,
// doubling up to max.
type backoffRange struct{ min, max time.Duration }

// rangeFor is the backoff range after a failure judged r.
func (c *caller) rangeFor(r result) backoffRange {
	if r.rateLimited() {
		return c.rateLimit
	}
	return c.backoff
}

// delay is the wait before retry number retry+1 (0-based: the first retry
// has retry == 0). A server-given Retry-After is honoured exactly plus a small
// positive jitter (never minus, so never early); otherwise exponential
// backoff with ±20 % jitter, never above the range's max.
func (c *caller) delay(r result, retry int) time.Duration {
	if r.retryAfter > 0 {
		extra := min(time.Duration(c.rand()*retryAfterJitterMax*float64(r.retryAfter)), retryAfterJitterCeiling)
		return r.retryAfter + extra
	}
	b := c.rangeFor(r)
	d := b.at(retry)
	d += time.Duration((c.rand()*2 - 1) * backoffJitterFraction * float64(d))
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
