package upstream

import (
	"testing"
	"time"
)

func TestLongestCall(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  CallConfig
		want time.Duration
	}{
		// 3 attempts of 5 s, 2 waits of the 30 s Retry-After + 1 s jitter.
		{"tenant defaults", CallConfig{}, 3*5*time.Second + 2*31*time.Second},
		{"no retries", CallConfig{MaxRetries: -1, Timeout: 2 * time.Second}, 2 * time.Second},
		{"ten retries", CallConfig{MaxRetries: 10, Timeout: time.Second}, 11*time.Second + 10*31*time.Second},
		{"short Retry-After cap: the backoff cap", CallConfig{MaxRetries: 1, Timeout: time.Second, MaxRetryAfter: time.Second}, 2*time.Second + 4*time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewTenantClient(TenantClientConfig{BaseURL: "http://tenants.test", CallConfig: tc.cfg})
			if err != nil {
				t.Fatal(err)
			}
			if got := c.LongestCall(); got != tc.want {
				t.Errorf("LongestCall = %v, want %v", got, tc.want)
			}
		})
	}
	login, err := NewLoginClient(LoginClientConfig{CallConfig: CallConfig{MaxRetries: 10}})
	if err != nil {
		t.Fatal(err)
	}
	// 11 attempts of 10 s, 10 waits of 31 s (the 8 s rate-limit cap is shorter).
	if got, want := login.LongestCall(), 110*time.Second+310*time.Second; got != want {
		t.Errorf("login LongestCall = %v, want %v", got, want)
	}
	p := &Pipeline{Tenants: mustTenantClient(t), Login: login}
	if got, want := p.LongestIssue(), mustTenantClient(t).LongestCall()+login.LongestCall(); got != want {
		t.Errorf("LongestIssue = %v, want %v", got, want)
	}
}

func mustTenantClient(t *testing.T) *TenantClient {
	t.Helper()
	c, err := NewTenantClient(TenantClientConfig{BaseURL: "http://tenants.test"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
