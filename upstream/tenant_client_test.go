package upstream

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

var acmeCreds = upstreamtest.Credentials{ClientID: "cid-acme", ClientSecret: `s3cr3t/"quoted"+é`, Region: "eu-west-1"}

func TestTenantCredentialsSuccessAndRequestShape(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.SetCredentials("acme", acmeCreds)
	c := newTenantClient(t, ts.URL()+"/") // a trailing slash must not double up

	creds, err := c.GenesysCredentials(context.Background(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	if creds.ClientID != acmeCreds.ClientID || !bytes.Equal(creds.ClientSecret, []byte(acmeCreds.ClientSecret)) ||
		creds.Region != "eu-west-1" || creds.Tenant != "acme" {
		t.Fatalf("credentials = %#v / secret %q", creds, creds.ClientSecret)
	}
	reqs := ts.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodGet || r.RequestURI != "/tenants/acme/credentials/genesys" {
		t.Errorf("request %s %s", r.Method, r.RequestURI)
	}
	if got := r.Header.Get("X-Service-Name"); got != "auth-service" {
		t.Errorf("X-Service-Name = %q, want auth-service", got)
	}
	if got := r.Header.Get("Accept"); got != "application/json" {
		t.Errorf("Accept = %q", got)
	}
}

func TestTenantServiceNameAndBasePath(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	c := newTenantClient(t, ts.URL()+"/api/v1", func(c *TenantClientConfig) { c.ServiceName = "sidecar-x" })
	_, err := c.GenesysCredentials(context.Background(), "acme")
	asError(t, err, CodeCredentialsNotFound) // the fake has no /api/v1 route
	r := ts.Requests()[0]
	if r.RequestURI != "/api/v1/tenants/acme/credentials/genesys" || r.Header.Get("X-Service-Name") != "sidecar-x" {
		t.Errorf("got %s with X-Service-Name %q", r.RequestURI, r.Header.Get("X-Service-Name"))
	}
}

func TestTenantPathIsEscaped(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	c := newTenantClient(t, ts.URL())
	cases := map[string]string{
		"../x":       "/tenants/..%2Fx/credentials/genesys",
		"a/b":        "/tenants/a%2Fb/credentials/genesys",
		"a b?c#d%2F": "/tenants/a%20b%3Fc%23d%252F/credentials/genesys",
		"..%2Fx":     "/tenants/..%252Fx/credentials/genesys",
	}
	for tenant, want := range cases {
		_, err := c.GenesysCredentials(context.Background(), tenant)
		asError(t, err, CodeCredentialsNotFound)
		if n := ts.Calls(tenant, "genesys"); n != 1 {
			t.Errorf("tenant %q: fake saw %d calls for it, want 1 (the segment must arrive intact)", tenant, n)
		}
		reqs := ts.Requests()
		if got := reqs[len(reqs)-1].RequestURI; got != want {
			t.Errorf("tenant %q: raw path %q, want %q", tenant, got, want)
		}
	}
}

func TestTenantUnusableSegmentsAreRefusedWithoutACall(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	c := newTenantClient(t, ts.URL())
	for _, tenant := range []string{"", ".", ".."} {
		_, err := c.GenesysCredentials(context.Background(), tenant)
		asError(t, err, CodeInvalidRequest)
	}
	if n := ts.TotalCalls(); n != 0 {
		t.Fatalf("%d calls, want 0", n)
	}
}

func TestTenantStatusClassification(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		steps  []upstreamtest.Step
		code   Code
		calls  int
		status int
	}{
		{"404 not found", []upstreamtest.Step{{Status: 404}, {Status: 404}, {Status: 404}}, CodeCredentialsNotFound, 1, 404},
		{"400 invalid", []upstreamtest.Step{{Status: 400}, {Status: 400}, {Status: 400}}, CodeInvalidRequest, 1, 400},
		{"401 is not retried", []upstreamtest.Step{{Status: 401}, {Status: 401}}, CodeTenantServiceUnavailable, 1, 401},
		{"403 is not retried", []upstreamtest.Step{{Status: 403}, {Status: 403}}, CodeTenantServiceUnavailable, 1, 403},
		{"3×503 exhausts", []upstreamtest.Step{{Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}}, CodeTenantServiceUnavailable, 3, 503},
		{"3×429 exhausts", []upstreamtest.Step{{Status: 429}, {Status: 429}, {Status: 429}, {Status: 429}}, CodeTenantServiceUnavailable, 3, 429},
		{"3xx is invalid", []upstreamtest.Step{{Status: 302, Header: http.Header{"Location": {"http://127.0.0.1:1/"}}}}, CodeUpstreamInvalidResponse, 1, 302},
		{"204 is invalid", []upstreamtest.Step{{Status: 204}}, CodeUpstreamInvalidResponse, 1, 204},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newFakeTenantService(t)
			ts.SetCredentials("acme", acmeCreds)
			ts.Script("acme", "genesys", tc.steps...)
			c := newTenantClient(t, ts.URL())
			_, err := c.GenesysCredentials(context.Background(), "acme")
			e := asError(t, err, tc.code)
			if n := ts.Calls("acme", "genesys"); n != tc.calls {
				t.Errorf("calls = %d, want %d", n, tc.calls)
			}
			if e.Attempts != tc.calls || e.Status != tc.status || e.Upstream != TenantService {
				t.Errorf("error fields: %+v", e)
			}
		})
	}
}

func TestTenantRetriesThenSucceeds(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		steps []upstreamtest.Step
		calls int
	}{
		{"503,503,200", []upstreamtest.Step{{Status: 503}, {Status: 503}}, 3},
		{"500 then 200", []upstreamtest.Step{{Status: 500, Body: jsonBody(`{"error":"boom"}`)}}, 2},
		{"408 then 200", []upstreamtest.Step{{Status: 408}}, 2},
		{"timeout then 200", []upstreamtest.Step{{Delay: 3 * testTimeout}}, 2},
		{"slow body then 200", []upstreamtest.Step{{Trickle: 4 * testTimeout}}, 2},
		{"dropped connection then 200", []upstreamtest.Step{{Drop: true}}, 2},
		{"truncated body then 200", []upstreamtest.Step{{Truncate: true}}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newFakeTenantService(t)
			ts.SetCredentials("acme", acmeCreds)
			ts.Script("acme", "genesys", tc.steps...)
			c := newTenantClient(t, ts.URL(), func(c *TenantClientConfig) { c.Timeout = testTimeout })
			creds, err := c.GenesysCredentials(context.Background(), "acme")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(creds.ClientSecret, []byte(acmeCreds.ClientSecret)) {
				t.Errorf("wrong secret")
			}
			if n := ts.Calls("acme", "genesys"); n != tc.calls {
				t.Errorf("calls = %d, want %d", n, tc.calls)
			}
		})
	}
}

func TestTenantTimeoutsExhaust(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.SetCredentials("acme", acmeCreds)
	slow := upstreamtest.Step{Delay: 10 * testTimeout}
	ts.Script("acme", "genesys", slow, slow, slow)
	c := newTenantClient(t, ts.URL(), func(c *TenantClientConfig) { c.Timeout = testTimeout })
	_, err := c.GenesysCredentials(context.Background(), "acme")
	e := asError(t, err, CodeTenantServiceUnavailable)
	if !errors.Is(err, ErrAttemptTimeout) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v: want ErrAttemptTimeout and not the caller's DeadlineExceeded", err)
	}
	if e.Attempts != 3 || e.Status != 0 || e.RetryAfterHint <= 0 {
		t.Errorf("error fields: %+v", e)
	}
	if n := ts.Calls("acme", "genesys"); n != 3 {
		t.Errorf("calls = %d, want 3", n)
	}
}

func TestTenant429HonoursRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.SetCredentials("acme", acmeCreds)
	ts.Script("acme", "genesys", upstreamtest.Step{Status: 429, RetryAfter: "1"})
	c := newTenantClient(t, ts.URL())
	if _, err := c.GenesysCredentials(context.Background(), "acme"); err != nil {
		t.Fatal(err)
	}
	reqs := ts.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if gap := reqs[1].Time.Sub(reqs[0].Time); gap < time.Second {
		t.Fatalf("retried after %s, before the 1 s Retry-After", gap)
	}
}

func TestTenantRetryAfterBeyondCapEndsAtOnce(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.SetCredentials("acme", acmeCreds)
	ts.Script("acme", "genesys", upstreamtest.Step{Status: 503, RetryAfter: "120"})
	c := newTenantClient(t, ts.URL(), func(c *TenantClientConfig) { c.MaxRetryAfter = time.Second })
	start := time.Now()
	_, err := c.GenesysCredentials(context.Background(), "acme")
	e := asError(t, err, CodeTenantServiceUnavailable)
	if e.RetryAfterHint != 120*time.Second || e.Attempts != 1 || e.Status != 503 {
		t.Errorf("error fields: %+v", e)
	}
	if time.Since(start) > time.Second {
		t.Errorf("took %s: should not wait at all", time.Since(start))
	}
}

func TestTenantNoRetryWhenNegative(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.Script("acme", "genesys", upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503})
	c := newTenantClient(t, ts.URL(), func(c *TenantClientConfig) { c.MaxRetries = -1 })
	_, err := c.GenesysCredentials(context.Background(), "acme")
	asError(t, err, CodeTenantServiceUnavailable)
	if n := ts.Calls("acme", "genesys"); n != 1 {
		t.Errorf("calls = %d, want 1", n)
	}
}

func TestTenantInvalidAnswers(t *testing.T) {
	t.Parallel()
	cases := map[string][]byte{
		"not json":       jsonBody(`clientId=x`),
		"no clientId":    jsonBody(`{"clientSecret":"s","region":"eu-west-1"}`),
		"no secret":      jsonBody(`{"clientId":"c","region":"eu-west-1"}`),
		"empty secret":   jsonBody(`{"clientId":"c","clientSecret":"","region":"eu-west-1"}`),
		"numeric secret": jsonBody(`{"clientId":"c","clientSecret":42,"region":"eu-west-1"}`),
		"no region":      jsonBody(`{"clientId":"c","clientSecret":"s"}`),
		"array":          jsonBody(`[]`),
		"oversized":      append(append(jsonBody(`{"clientId":"c","clientSecret":"s","region":"eu-west-1","pad":"`), bytes.Repeat([]byte("x"), MaxBodyBytes)...), `"}`...),
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ts := newFakeTenantService(t)
			ts.SetBody("acme", "genesys", 200, body, "")
			c := newTenantClient(t, ts.URL())
			_, err := c.GenesysCredentials(context.Background(), "acme")
			e := asError(t, err, CodeUpstreamInvalidResponse)
			if n := ts.Calls("acme", "genesys"); n != 1 {
				t.Errorf("calls = %d, want 1", n)
			}
			if e.Status != 200 {
				t.Errorf("status = %d", e.Status)
			}
		})
	}
}

func TestTenantCallerContextEnds(t *testing.T) {
	t.Parallel()
	t.Run("during an attempt", func(t *testing.T) {
		t.Parallel()
		ts := newFakeTenantService(t)
		ts.Script("acme", "genesys", upstreamtest.Step{Delay: 5 * time.Second})
		c := newTenantClient(t, ts.URL())
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.GenesysCredentials(ctx, "acme")
		asError(t, err, CodeTenantServiceUnavailable)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("errors.Is(%v, DeadlineExceeded) is false", err)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("took %s", time.Since(start))
		}
	})
	t.Run("during a Retry-After wait", func(t *testing.T) {
		t.Parallel()
		ts := newFakeTenantService(t)
		ts.Script("acme", "genesys", upstreamtest.Step{Status: 503, RetryAfter: "10"})
		c := newTenantClient(t, ts.URL())
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		_, err := c.GenesysCredentials(ctx, "acme")
		e := asError(t, err, CodeTenantServiceUnavailable)
		if !errors.Is(err, context.Canceled) || e.Status != 503 || e.Attempts != 1 {
			t.Errorf("error %v, fields %+v", err, e)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("took %s", time.Since(start))
		}
	})
}

func TestTenantStaticToken(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	ts.SetStaticToken("acme", "whatsapp", "wa-token", exp)
	ts.SetStaticToken("open", "whatsapp", "wa-open", time.Time{})
	ts.SetBody("bad", "whatsapp", 200, jsonBody(`{"accessToken":"x","expiresAt":"tomorrow"}`), "")
	ts.SetBody("empty", "whatsapp", 200, jsonBody(`{"expiresAt":"2030-01-01T00:00:00Z"}`), "")
	c := newTenantClient(t, ts.URL())
	ctx := context.Background()

	st, err := c.StaticToken(ctx, "acme", "whatsapp")
	if err != nil || st.AccessToken != "wa-token" || !st.ExpiresAt.Equal(exp) {
		t.Fatalf("got %v, %v", st, err)
	}
	if ts.Requests()[0].RequestURI != "/tenants/acme/credentials/whatsapp" {
		t.Errorf("path %s", ts.Requests()[0].RequestURI)
	}
	st, err = c.StaticToken(ctx, "open", "whatsapp")
	if err != nil || st.AccessToken != "wa-open" || !st.ExpiresAt.IsZero() {
		t.Fatalf("got %v, %v", st, err)
	}
	for _, tenant := range []string{"bad", "empty"} {
		_, err = c.StaticToken(ctx, tenant, "whatsapp")
		asError(t, err, CodeUpstreamInvalidResponse)
	}
	_, err = c.StaticToken(ctx, "nobody", "whatsapp")
	asError(t, err, CodeCredentialsNotFound)
	if s := st.String() + st.GoString(); strings.Contains(s, "wa-open") {
		t.Errorf("StaticToken formatting shows the token: %s", s)
	}
}

func TestNewTenantClientValidates(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"", "tenant-service:8080", "/relative", "ftp://host", "http://", "http://host?x=1", "http://user:hunter2@host"} {
		_, err := NewTenantClient(TenantClientConfig{BaseURL: base})
		if err == nil {
			t.Errorf("BaseURL %q accepted", base)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error shows the password: %v", err)
		}
	}
	if _, err := NewTenantClient(TenantClientConfig{BaseURL: "http://h", CallConfig: CallConfig{BackoffMin: time.Second, BackoffMax: time.Millisecond}}); err == nil {
		t.Error("inverted backoff accepted")
	}
	if _, err := NewTenantClient(TenantClientConfig{BaseURL: "https://tenant-service.internal:8443/base/"}); err != nil {
		t.Error(err)
	}
}
