package upstream

import "time"

// longest is the longest one call of c can take when every attempt runs
// into its timeout and every retry waits the longest it may: the larger
// backoff cap, or the longest Retry-After honoured (maxRetryAfter, plus its
// positive jitter). A longer Retry-After ends the call at once.
func (c *caller) longest() time.Duration {
	retryAfter := c.maxRetryAfter + min(time.Duration(retryAfterJitterMax*float64(c.maxRetryAfter)), retryAfterJitterCeiling)
	wait := max(c.backoff.max, c.rateLimit.max, retryAfter)
	return time.Duration(c.maxRetries+1)*c.timeout + time.Duration(c.maxRetries)*wait
}

// LongestCall is the longest a call of c can take with all its retries:
// attempts × the per-attempt timeout, plus the longest wait before each
// retry. A deadline shorter than this can cut a call off between retries.
func (c *TenantClient) LongestCall() time.Duration { return c.call.longest() }

// LongestCall is the longest an exchange of c can take with all its
// retries; see TenantClient.LongestCall.
func (c *LoginClient) LongestCall() time.Duration { return c.call.longest() }

// LongestIssue is the longest Issue can take: the Tenant Service call and
// then the exchange, each with all its retries. The cache bounds a fetch by
// it, so that a fetch is never cut off in the middle of its retries.
func (p *Pipeline) LongestIssue() time.Duration {
	var d time.Duration
	if p.Tenants != nil {
		d += p.Tenants.LongestCall()
	}
	if p.Login != nil {
		d += p.Login.LongestCall()
	}
	return d
}
