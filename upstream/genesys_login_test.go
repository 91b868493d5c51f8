package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/regions"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

const (
	loginID     = "cid-login"
	loginSecret = `p@ss:w/rd+%&"` // reserved characters: must travel unencoded
)

func euWest1(t *testing.T) regions.Region {
	r, err := regions.Lookup("eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func loginCreds() *Credentials {
	return &Credentials{Tenant: "acme", ClientID: loginID, ClientSecret: []byte(loginSecret), Region: "eu-west-1"}
}

func newLoginFixture(t *testing.T, mod ...func(*LoginClientConfig)) (*upstreamtest.Login, *LoginClient) {
	l := newFakeLogin(t)
	l.AddClient(loginID, loginSecret)
	return l, newLoginClient(t, l.URL(), mod...)
}

func TestExchangeSuccessAndRequestShape(t *testing.T) {
	t.Parallel()
	l, c := newLoginFixture(t)
	creds := loginCreds()
	tok, err := c.Exchange(context.Background(), euWest1(t), creds)
	if err != nil {
		t.Fatal(err)
	}
	if l.ClientOf(tok.AccessToken) != loginID || tok.TokenType != "bearer" || tok.ExpiresIn != 86399*time.Second {
		t.Fatalf("token %v", tok)
	}
	if string(creds.ClientSecret) != loginSecret {
		t.Error("Exchange changed the caller's credentials; wiping is the caller's job")
	}
	r := l.Requests()[0]
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte(loginID+":"+loginSecret))
	if r.Method != http.MethodPost || r.RequestURI != "/oauth/token" || r.Header.Get("Authorization") != wantAuth ||
		r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || string(r.Body) != "grant_type=client_credentials" ||
		r.Header.Get("Accept") != "application/json" {
		t.Errorf("request %s %s auth-ok=%v ct=%q body=%q", r.Method, r.RequestURI,
			r.Header.Get("Authorization") == wantAuth, r.Header.Get("Content-Type"), r.Body)
	}
}

// roundTripFunc answers without any network.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestExchangeUsesTheRegionsLoginHost(t *testing.T) {
	t.Parallel()
	var got string
	fake := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.URL.String()
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(`{"access_token":"t","expires_in":60}`)), Request: r}, nil
	})
	c, err := NewLoginClient(LoginClientConfig{CallConfig: CallConfig{HTTPClient: &http.Client{Transport: fake}}})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := regions.Lookup("ap-south-1")
	if _, err := c.Exchange(context.Background(), r, loginCreds()); err != nil {
		t.Fatal(err)
	}
	if got != "https://login.aps1.pure.cloud/oauth/token" {
		t.Fatalf("token URL %s", got)
	}
	if _, err := c.Exchange(context.Background(), regions.Region{}, loginCreds()); err == nil {
		t.Error("a zero Region was accepted")
	}
}

func TestExchangeRejectedClient(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		setup     func(*upstreamtest.Login)
		creds     *Credentials
		oauthErr  string
		wantCode  Code
		wantState int
	}{
		{"wrong secret → 400 invalid_client", nil,
			&Credentials{ClientID: loginID, ClientSecret: []byte("wrong")}, "invalid_client", CodeOAuthInvalidGrant, 400},
		{"unknown client → 400 invalid_client", nil,
			&Credentials{ClientID: "nobody", ClientSecret: []byte("x")}, "invalid_client", CodeOAuthInvalidGrant, 400},
		{"grant disabled → 400 unauthorized_client", func(l *upstreamtest.Login) { l.DisableGrant(loginID) },
			loginCreds(), "unauthorized_client", CodeOAuthInvalidGrant, 400},
		{"401", func(l *upstreamtest.Login) {
			l.Script(loginID, upstreamtest.Step{Status: 401}, upstreamtest.Step{Status: 401})
		}, loginCreds(), "", CodeOAuthInvalidGrant, 401},
		{"401 invalid_client", func(l *upstreamtest.Login) {
			l.Script(loginID, upstreamtest.Step{Status: 401, Body: jsonBody(`{"error":"invalid_client"}`)})
		}, loginCreds(), "invalid_client", CodeOAuthInvalidGrant, 401},
		{"400 invalid_grant", func(l *upstreamtest.Login) {
			l.Script(loginID, upstreamtest.Step{Status: 400, Body: jsonBody(`{"error":"invalid_grant"}`)})
		}, loginCreds(), "invalid_grant", CodeOAuthInvalidGrant, 400},
		{"403 naming an OAuth error", func(l *upstreamtest.Login) {
			l.Script(loginID, upstreamtest.Step{Status: 403, Body: jsonBody(`{"error":"access_denied"}`)})
		}, loginCreds(), "access_denied", CodeOAuthExchangeFailed, 403},
		{"400 invalid_request, not a rate limit", func(l *upstreamtest.Login) {
			l.Script(loginID, upstreamtest.Step{Status: 400, Body: jsonBody(`{"error":"invalid_request","description":"bad request"}`)})
		}, loginCreds(), "invalid_request", CodeOAuthExchangeFailed, 400},
		{"400 from a gateway, no OAuth error", func(l *upstreamtest.Login) {
			l.Script(loginID, upstreamtest.Step{Status: 400, Body: []byte("<html>bad request</html>")})
		}, loginCreds(), "", CodeOAuthExchangeFailed, 400},
		{"400 with an unknown error word", func(l *upstreamtest.Login) {
			l.Script(loginID, upstreamtest.Step{Status: 400, Body: jsonBody(`{"error":"Secret sauce"}`)})
		}, loginCreds(), "", CodeOAuthExchangeFailed, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, c := newLoginFixture(t)
			if tc.setup != nil {
				tc.setup(l)
			}
			_, err := c.Exchange(context.Background(), euWest1(t), tc.creds)
			e := asError(t, err, tc.wantCode)
			if e.OAuthError != tc.oauthErr || e.Status != tc.wantState || e.Attempts != 1 || e.Upstream != GenesysLogin {
				t.Errorf("error fields %+v", e)
			}
			if n := l.TotalCalls(); n != 1 {
				t.Errorf("calls = %d, want 1", n)
			}
			if strings.Contains(err.Error(), "Secret sauce") {
				t.Errorf("error shows upstream text: %v", err)
			}
		})
	}
}

func TestExchangeRetriesThenSucceeds(t *testing.T) {
	t.Parallel()
	rateLimitUpper := upstreamtest.RateLimitStep()
	rateLimitUpper.Body = jsonBody(`{"error":"invalid_request","error_description":"Rate Limit Exceeded; 300 per minute"}`)
	cases := []struct {
		name  string
		steps []upstreamtest.Step
		calls int
	}{
		{"rate-limit 400 then 200", []upstreamtest.Step{upstreamtest.RateLimitStep()}, 2},
		{"rate-limit 400 (error_description, any case) then 200", []upstreamtest.Step{rateLimitUpper}, 2},
		{"timeout then 200", []upstreamtest.Step{{Delay: 3 * testTimeout}}, 2},
		{"503,502 then 200", []upstreamtest.Step{{Status: 503}, {Status: 502}}, 3},
		{"429 then 200", []upstreamtest.Step{{Status: 429}}, 2},
		{"dropped then 200", []upstreamtest.Step{{Drop: true}}, 2},
		{"truncated then 200", []upstreamtest.Step{{Truncate: true}}, 2},
		{"slow body then 200", []upstreamtest.Step{{Trickle: 4 * testTimeout}}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, c := newLoginFixture(t, func(c *LoginClientConfig) { c.Timeout = testTimeout })
			l.Script(loginID, tc.steps...)
			tok, err := c.Exchange(context.Background(), euWest1(t), loginCreds())
			if err != nil {
				t.Fatal(err)
			}
			if l.ClientOf(tok.AccessToken) != loginID {
				t.Error("token not issued by the fake")
			}
			if n := l.Calls(loginID); n != tc.calls {
				t.Errorf("calls = %d, want %d", n, tc.calls)
			}
		})
	}
}

func TestExchangeExhausts(t *testing.T) {
	t.Parallel()
	slow := upstreamtest.Step{Delay: 10 * testTimeout}
	cases := []struct {
		name    string
		steps   []upstreamtest.Step
		status  int
		timeout bool
	}{
		{"3 timeouts", []upstreamtest.Step{slow, slow, slow, slow}, 0, true},
		{"3×503", []upstreamtest.Step{{Status: 503}, {Status: 503}, {Status: 503}, {Status: 503}}, 503, false},
		{"3 rate limits", []upstreamtest.Step{upstreamtest.RateLimitStep(), upstreamtest.RateLimitStep(), upstreamtest.RateLimitStep()}, 400, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			l, c := newLoginFixture(t, func(c *LoginClientConfig) { c.Timeout = testTimeout })
			l.Script(loginID, tc.steps...)
			_, err := c.Exchange(context.Background(), euWest1(t), loginCreds())
			e := asError(t, err, CodeOAuthExchangeFailed)
			if e.Attempts != 3 || e.Status != tc.status || e.RetryAfterHint <= 0 {
				t.Errorf("error fields %+v", e)
			}
			if errors.Is(err, ErrAttemptTimeout) != tc.timeout {
				t.Errorf("errors.Is(ErrAttemptTimeout) = %v for %v", !tc.timeout, err)
			}
			if n := l.Calls(loginID); n != 3 {
				t.Errorf("calls = %d, want 3", n)
			}
		})
	}
}

func TestExchange429HonoursRetryAfterDate(t *testing.T) {
	t.Parallel()
	l, c := newLoginFixture(t)
	// An HTTP-date has whole seconds: two seconds ahead is at least one.
	at := time.Now().Add(2 * time.Second).UTC().Truncate(time.Second)
	l.Script(loginID, upstreamtest.Step{Status: 429, RetryAfter: at.Format(http.TimeFormat)})
	if _, err := c.Exchange(context.Background(), euWest1(t), loginCreds()); err != nil {
		t.Fatal(err)
	}
	reqs := l.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests", len(reqs))
	}
	if reqs[1].Time.Before(at) {
		t.Fatalf("retried at %s, before the Retry-After date %s", reqs[1].Time, at)
	}
}

func TestExchangeRateLimitHonoursRetryAfterSeconds(t *testing.T) {
	t.Parallel()
	l, c := newLoginFixture(t)
	step := upstreamtest.RateLimitStep()
	step.RetryAfter = "1"
	l.Script(loginID, step)
	if _, err := c.Exchange(context.Background(), euWest1(t), loginCreds()); err != nil {
		t.Fatal(err)
	}
	reqs := l.Requests()
	if gap := reqs[1].Time.Sub(reqs[0].Time); gap < time.Second {
		t.Fatalf("retried after %s", gap)
	}
}

func TestExchangeInvalidAnswers(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"no access_token":       `{"token_type":"bearer","expires_in":86399}`,
		"empty access_token":    `{"access_token":"","expires_in":86399}`,
		"expires_in 0":          `{"access_token":"tok-x","expires_in":0}`,
		"expires_in negative":   `{"access_token":"tok-x","expires_in":-5}`,
		"expires_in missing":    `{"access_token":"tok-x"}`,
		"expires_in not number": `{"access_token":"tok-x","expires_in":"soon"}`,
		"not JSON":              `access_token=tok-x&expires_in=3600`,
		"JSON array":            `["tok-x"]`,
		"oversized":             `{"access_token":"tok-x","expires_in":60,"pad":"` + strings.Repeat("x", MaxBodyBytes) + `"}`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			l, c := newLoginFixture(t)
			l.Script(loginID, upstreamtest.Step{Status: 200, Body: []byte(body)})
			_, err := c.Exchange(context.Background(), euWest1(t), loginCreds())
			e := asError(t, err, CodeUpstreamInvalidResponse)
			if e.Status != 200 || l.Calls(loginID) != 1 {
				t.Errorf("status %d, calls %d", e.Status, l.Calls(loginID))
			}
			if strings.Contains(err.Error(), "tok-x") {
				t.Errorf("error shows the token: %v", err)
			}
		})
	}
}

func TestExchangeTokenFieldsNormalised(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body string
		typ  string
		life time.Duration
	}{
		{`{"access_token":"t","expires_in":3600}`, "bearer", time.Hour},
		{`{"access_token":"t","token_type":"Bearer","expires_in":"300"}`, "Bearer", 5 * time.Minute},
		{`{"access_token":"t","expires_in":99999999}`, "bearer", MaxTokenLifetime},
	}
	for _, tc := range cases {
		tok, why := parseToken([]byte(tc.body))
		if why != "" || tok.TokenType != tc.typ || tok.ExpiresIn != tc.life {
			t.Errorf("%s: %v %q", tc.body, tok, why)
		}
	}
}

func TestExchangeCallerContextEnds(t *testing.T) {
	t.Parallel()
	l, c := newLoginFixture(t)
	l.Script(loginID, upstreamtest.Step{Delay: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := c.Exchange(ctx, euWest1(t), loginCreds())
	asError(t, err, CodeOAuthExchangeFailed)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("errors.Is(%v, context.Canceled) is false", err)
	}
}

func TestExchangeRefusesIncompleteCredentials(t *testing.T) {
	t.Parallel()
	l, c := newLoginFixture(t)
	for _, creds := range []*Credentials{nil, {ClientID: loginID}, {ClientSecret: []byte("x")}} {
		_, err := c.Exchange(context.Background(), euWest1(t), creds)
		asError(t, err, CodeInvalidRequest)
	}
	if l.TotalCalls() != 0 {
		t.Error("called the login host")
	}
}

func TestNewLoginClientValidates(t *testing.T) {
	t.Parallel()
	for _, base := range []string{"login.mypurecloud.ie", "ftp://x", "http://u:hunter2@x"} {
		_, err := NewLoginClient(LoginClientConfig{BaseURL: base})
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("BaseURL %q: %v", base, err)
		}
	}
	if _, err := NewLoginClient(LoginClientConfig{RateLimitBackoffMin: 2 * time.Second, RateLimitBackoffMax: time.Second}); err == nil {
		t.Error("inverted rate-limit backoff accepted")
	}
	if _, err := NewLoginClient(LoginClientConfig{}); err != nil {
		t.Error(err)
	}
}
