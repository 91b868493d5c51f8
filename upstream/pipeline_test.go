package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/regions"
	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// pipelineFixture is a Pipeline over the fakes, with one tenant "acme"
// whose client is registered with the login fake.
type pipelineFixture struct {
	ts     *upstreamtest.TenantService
	login  *upstreamtest.Login
	p      *Pipeline
	logs   *logCapture
	counts *bodyCounter
}

const (
	pipeID     = "cid-9f2e61c4"
	pipeSecret = `sk-"7b1d\e0a4"/+:%` // a JSON escape, a backslash, reserved characters
)

func newPipelineFixture(t *testing.T) *pipelineFixture {
	return newPipelineFixtureWith(t, BreakerConfig{})
}

// newPipelineFixtureWith builds the fixture with both clients' breakers
// configured by bc.
func newPipelineFixtureWith(t *testing.T, bc BreakerConfig) *pipelineFixture {
	f := &pipelineFixture{ts: newFakeTenantService(t), login: newFakeLogin(t), logs: &logCapture{}}
	f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret, Region: "eu-west-1"})
	f.login.AddClient(pipeID, pipeSecret)
	f.counts = &bodyCounter{base: loopbackTransport(t)}
	hc := &http.Client{Transport: f.counts}
	tenants := newTenantClient(t, f.ts.URL(), func(c *TenantClientConfig) {
		c.HTTPClient, c.Logger, c.Timeout, c.Breaker = hc, f.logs.logger(), testTimeout, bc
	})
	login := newLoginClient(t, f.login.URL(), func(c *LoginClientConfig) {
		c.HTTPClient, c.Logger, c.Timeout, c.Breaker = hc, f.logs.logger(), testTimeout, bc
	})
	f.p = &Pipeline{Tenants: tenants, Login: login}
	return f
}

func TestIssueGenesys(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	now := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	f.p.Now = func() time.Time { return now }
	got, err := f.p.Issue(context.Background(), "genesys", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if f.login.ClientOf(got.AccessToken) != pipeID || got.TokenType != "bearer" || got.Lifetime != 86399*time.Second ||
		!got.ExpiresAt.Equal(now.Add(86399*time.Second)) || got.APIBaseURL != "https://api.mypurecloud.ie" || got.Region != "eu-west-1" {
		t.Fatalf("issued %v", got)
	}
	f.p.APIBaseURL = "http://127.0.0.1:9/api"
	if got, err := f.p.Issue(context.Background(), "genesys", "acme"); err != nil || got.APIBaseURL != "http://127.0.0.1:9/api" {
		t.Errorf("APIBaseURL override: %v %v", got, err)
	}
}

func TestIssueRegionSpellings(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	for spelling, api := range map[string]string{"ap_south_1": "https://api.aps1.pure.cloud", "MYPURECLOUD.DE": "https://api.mypurecloud.de"} {
		f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret, Region: spelling})
		got, err := f.p.Issue(context.Background(), "genesys", "acme")
		if err != nil || got.APIBaseURL != api {
			t.Errorf("%s: %v %v", spelling, got, err)
		}
	}
}

func TestIssueUnknownRegion(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret, Region: "mars-north-1"})
	_, err := f.p.Issue(context.Background(), "genesys", "acme")
	e := asError(t, err, CodeUpstreamInvalidResponse)
	var unknown *regions.UnknownRegionError
	if e.Upstream != TenantService || !errors.As(err, &unknown) || !strings.Contains(err.Error(), "eu-west-1") {
		t.Errorf("error %v", err)
	}
	if f.login.TotalCalls() != 0 {
		t.Error("exchanged despite an unknown region")
	}
}

func TestIssueUnknownProvider(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	for _, p := range []string{"", "slack", "Genesys"} {
		_, err := f.p.Issue(context.Background(), p, "acme")
		asError(t, err, CodeInvalidRequest)
	}
	if f.ts.TotalCalls() != 0 {
		t.Error("called the Tenant Service for an unknown provider")
	}
}

func TestIssueGenesysErrorsPassThrough(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	_, err := f.p.Issue(context.Background(), "genesys", "nobody")
	asError(t, err, CodeCredentialsNotFound)
	f.login.DisableGrant(pipeID)
	_, err = f.p.Issue(context.Background(), "genesys", "acme")
	asError(t, err, CodeOAuthInvalidGrant)
}

func TestIssueWhatsApp(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	now := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	f.p.Now = func() time.Time { return now }
	ctx := context.Background()

	f.ts.SetStaticToken("acme", "whatsapp", "wa-1", time.Time{})
	got, err := f.p.Issue(ctx, "whatsapp", "acme")
	if err != nil || got.AccessToken != "wa-1" || got.Lifetime != 5*time.Minute || !got.ExpiresAt.Equal(now.Add(5*time.Minute)) ||
		got.APIBaseURL != "" || got.TokenType != "bearer" {
		t.Fatalf("default TTL: %v %v", got, err)
	}
	f.ts.SetStaticToken("acme", "whatsapp", "wa-2", now.Add(2*time.Minute))
	if got, err := f.p.Issue(ctx, "whatsapp", "acme"); err != nil || got.Lifetime != 2*time.Minute || !got.ExpiresAt.Equal(now.Add(2*time.Minute)) {
		t.Errorf("expiresAt before TTL: %v %v", got, err)
	}
	f.p.StaticTokenTTL = time.Minute
	f.ts.SetStaticToken("acme", "whatsapp", "wa-3", now.Add(time.Hour))
	if got, err := f.p.Issue(ctx, "whatsapp", "acme"); err != nil || got.Lifetime != time.Minute {
		t.Errorf("TTL before expiresAt: %v %v", got, err)
	}
	f.ts.SetStaticToken("acme", "whatsapp", "wa-4", now.Add(-time.Second))
	_, err = f.p.Issue(ctx, "whatsapp", "acme")
	asError(t, err, CodeUpstreamInvalidResponse)
	if f.login.TotalCalls() != 0 {
		t.Error("a static-token provider made an exchange")
	}
}

// TestEveryResponseBodyIsClosed runs retrying, failing and succeeding paths
// through a transport that counts bodies, and requires every one closed.
func TestEveryResponseBodyIsClosed(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	big := bytes.Repeat([]byte("x"), MaxBodyBytes+10)
	scenarios := []func(){
		func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503}) },
		func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 429, Body: big}) },
		func() {
			f.login.Script(pipeID, upstreamtest.RateLimitStep(), upstreamtest.Step{Status: 502, Body: big})
		},
		func() {
			f.login.Script(pipeID, upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503})
		},
		func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Trickle: 4 * testTimeout}) },
		func() { f.login.Script(pipeID, upstreamtest.Step{Status: 200, Body: big}) },
		func() { f.login.Script(pipeID, upstreamtest.Step{Status: 401}) },
		func() {},
	}
	for i, arrange := range scenarios {
		arrange()
		f.p.Issue(context.Background(), "genesys", "acme")
		opened, closed := f.counts.opened.Load(), f.counts.closed.Load()
		if opened != closed {
			t.Fatalf("scenario %d: %d bodies opened, %d closed", i, opened, closed)
		}
	}
	if n := f.counts.opened.Load(); n < 15 {
		t.Fatalf("only %d bodies seen: scenarios did not run as intended", n)
	}
}

// TestSecretsNeverLeak drives every path through one debug-level JSON
// logger and checks logs, error texts and formatted results for the client
// ID, the secret, the Basic string and every access token.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	// Breakers off: every scenario must reach the fakes, and the failing
	// ones in a row would open them. TestBreakerLogsNoSecrets covers the
	// breakers' own lines.
	f := newPipelineFixtureWith(t, BreakerConfig{FailureThreshold: -1})
	const leakyToken = "tok-LEAKY-5e0c"
	slow := upstreamtest.Step{Delay: 4 * testTimeout}
	rateLimitEcho := upstreamtest.RateLimitStep()
	rateLimitEcho.Body = []byte(`{"error":"invalid_request","description":"rate limit exceeded for ` + pipeID + `"}`)
	scenarios := map[string]func(){
		"tenant 404": func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 404}) },
		"tenant 400": func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 400}) },
		"tenant 503×3": func() {
			f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503})
		},
		"tenant 503,503,200": func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503}) },
		"tenant 429":         func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 429, RetryAfter: "0"}) },
		"tenant timeout":     func() { f.ts.Script("acme", "genesys", slow) },
		"tenant timeouts":    func() { f.ts.Script("acme", "genesys", slow, slow, slow) },
		"tenant dropped":     func() { f.ts.Script("acme", "genesys", upstreamtest.Step{Drop: true}) },
		"tenant malformed": func() {
			f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 200, Body: []byte(`{"clientId":"` + pipeID + `","clientSecret":"` + pipeSecret)})
		},
		"login invalid grant": func() {
			f.login.Script(pipeID, upstreamtest.Step{Status: 400, Body: []byte(`{"error":"invalid_client","description":"` + pipeID + `"}`)})
		},
		"login 401":        func() { f.login.Script(pipeID, upstreamtest.Step{Status: 401}) },
		"login rate limit": func() { f.login.Script(pipeID, rateLimitEcho) },
		"login timeout":    func() { f.login.Script(pipeID, slow) },
		"login timeouts":   func() { f.login.Script(pipeID, slow, slow, slow) },
		"login 429":        func() { f.login.Script(pipeID, upstreamtest.Step{Status: 429}) },
		"login no expiry": func() {
			f.login.Script(pipeID, upstreamtest.Step{Status: 200, Body: []byte(`{"access_token":"` + leakyToken + `"}`)})
		},
		"login expiry 0": func() {
			f.login.Script(pipeID, upstreamtest.Step{Status: 200, Body: []byte(`{"access_token":"` + leakyToken + `","expires_in":0}`)})
		},
		"login not json": func() {
			f.login.Script(pipeID, upstreamtest.Step{Status: 200, Body: []byte(`access_token=` + leakyToken)})
		},
		"login bad secret": func() {
			f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret + "x", Region: "eu-west-1"})
		},
		"unknown region": func() {
			f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret, Region: "nowhere"})
		},
		"success": func() {},
	}
	basicRaw := base64.StdEncoding.EncodeToString([]byte(pipeID + ":" + pipeSecret))
	var texts []string
	tokens := []string{leakyToken}
	for name, arrange := range scenarios {
		f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret, Region: "eu-west-1"})
		arrange()
		got, err := f.p.Issue(context.Background(), "genesys", "acme")
		if err != nil {
			texts = append(texts, name+": "+err.Error(), fmt.Sprintf("%+v", err))
		} else {
			tokens = append(tokens, got.AccessToken)
			texts = append(texts, fmt.Sprint(got), fmt.Sprintf("%+v %#v", got, got))
		}
	}
	if len(tokens) < 4 {
		t.Fatalf("only %d successes: scenarios did not run as intended", len(tokens)-1)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `"level":"WARN"`) || !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatalf("expected retry warnings and debug lines, got:\n%s", logs)
	}
	secrets := append([]string{pipeID, pipeSecret, basicRaw, "Basic " + basicRaw, `sk-\"7b1d`}, tokens...)
	assertNoSecrets(t, "logs", logs, secrets...)
	assertNoSecrets(t, "errors and results", strings.Join(texts, "\n"), secrets...)
}

func TestRetryIsLoggedWithContext(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	f.ts.Script("acme", "genesys", upstreamtest.Step{Status: 503})
	if _, err := f.p.Issue(context.Background(), "genesys", "acme"); err != nil {
		t.Fatal(err)
	}
	line := ""
	for _, l := range strings.Split(f.logs.String(), "\n") {
		if strings.Contains(l, `"level":"WARN"`) {
			line = l
		}
	}
	for _, want := range []string{`"upstream":"tenant_service"`, `"tenant":"acme"`, `"attempt":1`, `"status":503`, `"delay":`, `"reason":"HTTP 503"`} {
		if !strings.Contains(line, want) {
			t.Errorf("retry log line %q lacks %s", line, want)
		}
	}
}

// TestSecretIsZeroedAfterIssue checks the very buffer the pipeline held,
// on success and on each kind of failure after the fetch.
func TestSecretIsZeroedAfterIssue(t *testing.T) {
	t.Parallel()
	cases := map[string]func(*pipelineFixture){
		"success":         func(*pipelineFixture) {},
		"rejected client": func(f *pipelineFixture) { f.login.DisableGrant(pipeID) },
		"exchange timeouts": func(f *pipelineFixture) {
			s := upstreamtest.Step{Delay: 4 * testTimeout}
			f.login.Script(pipeID, s, s, s)
		},
		"invalid token answer": func(f *pipelineFixture) {
			f.login.Script(pipeID, upstreamtest.Step{Status: 200, Body: []byte(`{}`)})
		},
		"unknown region": func(f *pipelineFixture) {
			f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret, Region: "nowhere"})
		},
		"caller gives up": func(f *pipelineFixture) {
			f.login.Script(pipeID, upstreamtest.Step{Delay: time.Minute})
		},
	}
	for name, arrange := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newPipelineFixture(t)
			arrange(f)
			var held []byte
			var creds *Credentials
			f.p.inspect = func(c *Credentials) { held, creds = c.ClientSecret, c }
			wait := 5 * time.Second
			if name == "caller gives up" {
				wait = testTimeout / 2 // ends inside the first exchange attempt
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_, err := f.p.Issue(ctx, "genesys", "acme")
			if (name == "success") != (err == nil) {
				t.Fatalf("err = %v", err)
			}
			if name == "caller gives up" && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want the caller's deadline", err)
			}
			if string(pipeSecret) == "" || len(held) != len(pipeSecret) {
				t.Fatalf("held %d bytes, want %d", len(held), len(pipeSecret))
			}
			if !bytes.Equal(held, make([]byte, len(held))) {
				t.Errorf("secret buffer not zeroed: %q", held)
			}
			if creds.ClientSecret != nil || creds.ClientID != "" {
				t.Errorf("credentials still reference the secret or ID")
			}
		})
	}
}

// TestUnknownRegionIsNeverEchoed: a region that is no region — a secret in
// the wrong field, 900 KB of it — reaches neither the error nor a log line
// (debug included), which name its length and fingerprint instead.
func TestUnknownRegionIsNeverEchoed(t *testing.T) {
	t.Parallel()
	f := newPipelineFixture(t)
	for _, region := range []string{pipeSecret, strings.Repeat("r", 900<<10)} {
		f.ts.SetCredentials("acme", upstreamtest.Credentials{ClientID: pipeID, ClientSecret: pipeSecret, Region: region})
		_, err := f.p.Issue(context.Background(), "genesys", "acme")
		asError(t, err, CodeUpstreamInvalidResponse)
		if strings.Contains(err.Error(), region) || len(err.Error()) > 1024 {
			t.Errorf("the error echoes the region: %.100s", err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("(%d bytes, sha256 ", len(region))) {
			t.Errorf("the error does not describe the region: %v", err)
		}
	}
	logs := f.logs.String()
	if !strings.Contains(logs, `"level":"DEBUG"`) {
		t.Fatal("no debug line to check")
	}
	assertNoSecrets(t, "the log", logs, pipeSecret, strings.Repeat("r", 64))
	for _, line := range strings.Split(logs, "\n") {
		if len(line) > 1024 {
			t.Errorf("a log line of %d bytes: %.200s", len(line), line)
		}
	}
}
