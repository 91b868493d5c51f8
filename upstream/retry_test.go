package upstream

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

var epoch = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func TestRetryAfterParsing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"1", time.Second},
		{" 120 ", 2 * time.Minute},
		{"-1", 0},
		{"1.5", 0},
		{"soon", 0},
		{"99999999999999999999999", maxRetryAfterValue},
		{epoch.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second},
		{epoch.Add(90 * time.Second).Format(time.RFC850), 90 * time.Second},
		{epoch.Add(5 * time.Second).Format(time.ANSIC), 5 * time.Second},
		{epoch.Add(-time.Minute).Format(http.TimeFormat), 0}, // past: use our own backoff
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Retry-After", tc.header)
		}
		if got := retryAfter(h, epoch); got != tc.want {
			t.Errorf("Retry-After %q = %s, want %s", tc.header, got, tc.want)
		}
	}
}

func testCaller(t *testing.T, rnd float64) *caller {
	r, err := newCaller(CallConfig{BackoffMin: 500 * time.Millisecond, BackoffMax: 4 * time.Second},
		callerSpec{upstream: "test", exhausted: CodeTenantServiceUnavailable, defaultTimeout: time.Second,
			rateLimitMin: time.Second, rateLimitMax: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.rand = func() float64 { return rnd }
	r.now = func() time.Time { return epoch }
	return r
}

func TestDelayNeverEarlyForRetryAfter(t *testing.T) {
	t.Parallel()
	for _, rnd := range []float64{0, 0.5, 0.999} {
		r := testCaller(t, rnd)
		for _, ra := range []time.Duration{time.Second, 7 * time.Second, 30 * time.Second} {
			d := r.delay(result{retry: true, hostFault: true, retryAfter: ra}, 2)
			if d < ra || d > ra+time.Second {
				t.Errorf("rand %v, Retry-After %s: delay %s", rnd, ra, d)
			}
		}
	}
}

func TestDelayBackoff(t *testing.T) {
	t.Parallel()
	plain := result{retry: true, hostFault: true}
	limited := result{retry: true}
	cases := []struct {
		o        result
		retry    int
		rnd      float64
		min, max time.Duration
	}{
		{plain, 0, 0.5, 500 * time.Millisecond, 500 * time.Millisecond},
		{plain, 1, 0.5, time.Second, time.Second},
		{plain, 2, 0.5, 2 * time.Second, 2 * time.Second},
		{plain, 9, 0.5, 4 * time.Second, 4 * time.Second},
		{plain, 0, 0, 400 * time.Millisecond, 400 * time.Millisecond},      // −20 %
		{plain, 0, 0.9999, 599 * time.Millisecond, 600 * time.Millisecond}, // +20 %
		{plain, 9, 0.9999, 4 * time.Second, 4 * time.Second},               // jitter never above max
		{limited, 0, 0.5, time.Second, time.Second},
		{limited, 3, 0.5, 8 * time.Second, 8 * time.Second},
	}
	for _, tc := range cases {
		r := testCaller(t, tc.rnd)
		if d := r.delay(tc.o, tc.retry); d < tc.min || d > tc.max {
			t.Errorf("retry %d rand %v rate-limited %v: %s, want %s..%s", tc.retry, tc.rnd, tc.o.rateLimited(), d, tc.min, tc.max)
		}
	}
}

func TestRetrierDefaults(t *testing.T) {
	t.Parallel()
	spec := callerSpec{upstream: "x", exhausted: CodeOAuthExchangeFailed, defaultTimeout: time.Second}
	r, err := newCaller(CallConfig{}, spec)
	if err != nil {
		t.Fatal(err)
	}
	if r.maxRetries != 2 || r.backoff != (backoffRange{500 * time.Millisecond, 4 * time.Second}) ||
		r.rateLimit != (backoffRange{time.Second, 8 * time.Second}) || r.maxRetryAfter != 30*time.Second || r.log == nil {
		t.Errorf("defaults: %+v", r)
	}
	r, _ = newCaller(CallConfig{MaxRetries: -1}, spec)
	if r.maxRetries != 0 {
		t.Errorf("negative MaxRetries → %d retries", r.maxRetries)
	}
}

func TestTenantClassification(t *testing.T) {
	t.Parallel()
	c := testCaller(t, 0.5)
	cases := []struct {
		o     outcome
		ok    bool
		retry bool
		code  Code
	}{
		{outcome{status: 200}, true, false, ""},
		{outcome{status: 404}, false, false, CodeCredentialsNotFound},
		{outcome{status: 400}, false, false, CodeInvalidRequest},
		{outcome{status: 401}, false, false, CodeTenantServiceUnavailable},
		{outcome{status: 403}, false, false, CodeTenantServiceUnavailable},
		{outcome{status: 409}, false, false, CodeTenantServiceUnavailable},
		{outcome{status: 408}, false, true, ""},
		{outcome{status: 429}, false, true, ""},
		{outcome{status: 500}, false, true, ""},
		{outcome{status: 503}, false, true, ""},
		{outcome{status: 301}, false, false, CodeUpstreamInvalidResponse},
		{outcome{err: fmt.Errorf("x: %w", ErrAttemptTimeout)}, false, true, ""},
		{outcome{err: errors.New("connection refused")}, false, true, ""},
		{outcome{status: 200, err: errBodyTooLarge}, false, false, CodeUpstreamInvalidResponse},
	}
	for _, tc := range cases {
		v := classifyTenantService(c, &tc.o)
		if v.ok() != tc.ok || v.retry != tc.retry || (tc.code != "" && v.code != tc.code) {
			t.Errorf("status %d err %v: %+v", tc.o.status, tc.o.err, v)
		}
	}
}

func TestLoginClassification(t *testing.T) {
	t.Parallel()
	c := testCaller(t, 0.5)
	ra := http.Header{"Retry-After": {"4"}}
	cases := []struct {
		status      int
		header      http.Header
		body        string
		retry       bool
		rateLimited bool
		code        Code
		oauth       string
		retryAfter  time.Duration
	}{
		{400, nil, `{"error":"invalid_client","description":"authentication failed"}`, false, false, CodeOAuthInvalidGrant, "invalid_client", 0},
		{400, nil, `{"error":"unauthorized_client"}`, false, false, CodeOAuthInvalidGrant, "unauthorized_client", 0},
		{400, nil, `{"error":"invalid_grant"}`, false, false, CodeOAuthInvalidGrant, "invalid_grant", 0},
		{400, nil, `{"error":"invalid_request","description":"rate limit exceeded; x"}`, true, true, "", "invalid_request", 0},
		{400, ra, `{"error":"invalid_request","error_description":"  RATE LIMIT EXCEEDED"}`, true, true, "", "invalid_request", 4 * time.Second},
		{400, nil, `{"error":"invalid_client","description":"rate limit exceeded"}`, false, false, CodeOAuthInvalidGrant, "invalid_client", 0},
		{400, nil, `{"error":"invalid_request","description":"the rate limit exceeded"}`, false, false, CodeOAuthExchangeFailed, "invalid_request", 0},
		{400, nil, `not json`, false, false, CodeOAuthExchangeFailed, "", 0},
		{401, nil, ``, false, false, CodeOAuthInvalidGrant, "", 0},
		{403, nil, `{}`, false, false, CodeOAuthExchangeFailed, "", 0},
		{429, ra, ``, true, true, "", "", 4 * time.Second},
		{429, nil, ``, true, true, "", "", 0},
		{503, ra, ``, true, false, "", "", 4 * time.Second},
		{302, nil, ``, false, false, CodeUpstreamInvalidResponse, "", 0},
	}
	for _, tc := range cases {
		o := &outcome{status: tc.status, header: tc.header, body: []byte(tc.body)}
		if o.header == nil {
			o.header = http.Header{}
		}
		v := classifyLogin(c, o)
		if v.ok() || v.retry != tc.retry || v.rateLimited() != tc.rateLimited || (!tc.retry && v.code != tc.code) ||
			o.oauthError != tc.oauth || v.retryAfter != tc.retryAfter {
			t.Errorf("%d %s: %+v", tc.status, tc.body, v)
		}
	}
}
