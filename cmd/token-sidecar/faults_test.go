package main

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// TestFaultSuite drives every upstream failure the sidecar must survive
// through the whole program. For each: the contract's status and code, the
// number of upstream calls it cost, and that the failure was not cached: the
// next request, with the upstream healthy again, gets a token.
func TestFaultSuite(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for retries and Retry-After")
	}
	f := newFakes(t)
	// Breakers off: the faults share one host per upstream and would open
	// its breaker for each other; breaker_test.go covers the breakers.
	s := startSidecar(t, f.env(), "-log-level", "debug", "-breaker-failure-threshold", "0",
		"-tenant-service-timeout", "400ms", "-oauth-timeout", "400ms", "-negative-ttl", "0")

	// Every secret, client ID and token of the run, to scan the logs for.
	var mu sync.Mutex
	var secrets []string
	remember := func(v ...string) {
		mu.Lock()
		defer mu.Unlock()
		secrets = append(secrets, v...)
	}

	jsonBody := func(s string) []byte { return []byte(s) }
	big := []byte(`{"clientId":"x","clientSecret":"` + strings.Repeat("a", 2<<20) + `","region":"eu-west-1"}`)
	// An HTTP-date is computed when the subtest runs, not when the table is
	// built: parallel subtests may start seconds later.
	const inTwoSeconds = "date:+2s"
	withDates := func(steps []upstreamtest.Step) []upstreamtest.Step {
		out := append([]upstreamtest.Step(nil), steps...)
		for i := range out {
			if out[i].RetryAfter == inTwoSeconds {
				out[i].RetryAfter = time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat)
			}
		}
		return out
	}

	type fault struct {
		name        string
		ts          []upstreamtest.Step // scripted Tenant Service answers
		login       []upstreamtest.Step // scripted login answers
		status      int
		code        string
		tsCalls     int // Tenant Service calls of the failing request
		loginCalls  int // exchanges of the failing request
		minDuration time.Duration
		expiresIn   func(int) bool // checks expires_in of a 200
	}
	s503 := upstreamtest.Step{Status: 503, Body: jsonBody(`{"error":"unavailable"}`)}
	faults := []fault{
		{name: "tenant service 5xx", ts: []upstreamtest.Step{s503, s503, s503},
			status: 503, code: "TENANT_SERVICE_UNAVAILABLE", tsCalls: 3},
		{name: "tenant service 5xx then ok", ts: []upstreamtest.Step{s503, {Status: 500}},
			status: 200, tsCalls: 3, loginCalls: 1},
		{name: "tenant service 429 retry-after seconds", ts: []upstreamtest.Step{{Status: 429, RetryAfter: "1"}},
			status: 200, tsCalls: 2, loginCalls: 1, minDuration: time.Second},
		{name: "tenant service 429 retry-after date", ts: []upstreamtest.Step{{Status: 429, RetryAfter: inTwoSeconds}},
			status: 200, tsCalls: 2, loginCalls: 1, minDuration: time.Second},
		{name: "tenant service timeouts", ts: []upstreamtest.Step{{Delay: 2 * time.Second}, {Delay: 2 * time.Second}, {Delay: 2 * time.Second}},
			status: 503, code: "TENANT_SERVICE_UNAVAILABLE", tsCalls: 3},
		{name: "tenant service timeout then ok", ts: []upstreamtest.Step{{Delay: 2 * time.Second}},
			status: 200, tsCalls: 2, loginCalls: 1},
		{name: "tenant service reset mid-body", ts: []upstreamtest.Step{{Truncate: true}},
			status: 200, tsCalls: 2, loginCalls: 1},
		{name: "tenant service body trickles", ts: []upstreamtest.Step{{Trickle: 2 * time.Second}},
			status: 200, tsCalls: 2, loginCalls: 1},
		{name: "tenant service truncated json", ts: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"clientId":"x","clientSecret":"y"`)}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1},
		{name: "tenant service oversized body", ts: []upstreamtest.Step{{Status: 200, Body: big}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1},
		{name: "tenant service wrong content type", ts: []upstreamtest.Step{{Status: 200, Body: jsonBody(`<html>maintenance</html>`), Header: http.Header{"Content-Type": {"text/html"}}}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1},
		{name: "tenant service dropped connection", ts: []upstreamtest.Step{{Drop: true}, {Drop: true}, {Drop: true}, {Drop: true}, {Drop: true}, {Drop: true}},
			status: 503, code: "TENANT_SERVICE_UNAVAILABLE"},

		{name: "login 5xx", login: []upstreamtest.Step{s503, s503, s503},
			status: 503, code: "OAUTH_EXCHANGE_FAILED", tsCalls: 1, loginCalls: 3},
		{name: "login 429 retry-after seconds", login: []upstreamtest.Step{{Status: 429, RetryAfter: "1"}},
			status: 200, tsCalls: 1, loginCalls: 2, minDuration: time.Second},
		{name: "login 429 retry-after date", login: []upstreamtest.Step{{Status: 429, RetryAfter: inTwoSeconds}},
			status: 200, tsCalls: 1, loginCalls: 2, minDuration: time.Second},
		{name: "login rate-limit 400", login: []upstreamtest.Step{upstreamtest.RateLimitStep()},
			status: 200, tsCalls: 1, loginCalls: 2, minDuration: 500 * time.Millisecond},
		{name: "login timeouts", login: []upstreamtest.Step{{Delay: 2 * time.Second}, {Delay: 2 * time.Second}, {Delay: 2 * time.Second}},
			status: 503, code: "OAUTH_EXCHANGE_FAILED", tsCalls: 1, loginCalls: 3},
		{name: "login reset mid-body", login: []upstreamtest.Step{{Truncate: true}},
			status: 200, tsCalls: 1, loginCalls: 2},
		{name: "login body trickles", login: []upstreamtest.Step{{Trickle: 2 * time.Second}},
			status: 200, tsCalls: 1, loginCalls: 2},
		{name: "login truncated json", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"access_token":"abc","expires_in":36`)}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1, loginCalls: 1},
		{name: "login oversized body", login: []upstreamtest.Step{{Status: 200, Body: []byte(`{"access_token":"` + strings.Repeat("t", 2<<20) + `","expires_in":3600}`)}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1, loginCalls: 1},
		{name: "login wrong content type", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`<html>login</html>`), Header: http.Header{"Content-Type": {"text/html"}}}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1, loginCalls: 1},
		{name: "expires_in missing", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"access_token":"abc","token_type":"bearer"}`)}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1, loginCalls: 1},
		{name: "expires_in zero", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"access_token":"abc","token_type":"bearer","expires_in":0}`)}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1, loginCalls: 1},
		{name: "expires_in negative", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"access_token":"abc","token_type":"bearer","expires_in":-60}`)}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1, loginCalls: 1},
		{name: "expires_in not a number", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"access_token":"abc","token_type":"bearer","expires_in":"soon"}`)}},
			status: 502, code: "UPSTREAM_INVALID_RESPONSE", tsCalls: 1, loginCalls: 1},
		{name: "expires_in absurdly large is clamped to 48 h", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"access_token":"huge-lifetime-token","token_type":"bearer","expires_in":99999999999}`)}},
			status: 200, tsCalls: 1, loginCalls: 1,
			expiresIn: func(s int) bool { return s <= 48*3600-30 && s > 48*3600-40 }},
		{name: "token_type missing means bearer", login: []upstreamtest.Step{{Status: 200, Body: jsonBody(`{"access_token":"typeless-token","expires_in":3600}`)}},
			status: 200, tsCalls: 1, loginCalls: 1},
	}

	for _, fc := range faults {
		t.Run(fc.name, func(t *testing.T) {
			t.Parallel()
			tenant := strings.NewReplacer(" ", "-", "_", "-").Replace(fc.name)
			tenant = strings.Trim(tenant, "-")
			id := f.addTenant(tenant)
			remember(id, "secret-"+tenant+"-s3cr3t")
			if fc.ts != nil {
				f.ts.Script(tenant, "genesys", withDates(fc.ts)...)
			}
			if fc.login != nil {
				f.login.Script(id, withDates(fc.login)...)
			}
			start := time.Now()
			a := s.token(t, tenant)
			took := time.Since(start)
			remember(a.AccessToken)
			if a.Status != fc.status || a.Code != fc.code {
				t.Fatalf("status %d code %q (%s); want %d %q", a.Status, a.Code, a.Message, fc.status, fc.code)
			}
			if fc.status == 503 && a.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if fc.tsCalls > 0 {
				if n := f.ts.Calls(tenant, "genesys"); n != fc.tsCalls {
					t.Errorf("Tenant Service calls = %d, want %d", n, fc.tsCalls)
				}
			} else if n := f.ts.Calls(tenant, "genesys"); n < 3 {
				t.Errorf("Tenant Service calls = %d, want at least 3 attempts", n)
			}
			if n := f.login.Calls(id); n != fc.loginCalls {
				t.Errorf("exchanges = %d, want %d", n, fc.loginCalls)
			}
			if took < fc.minDuration {
				t.Errorf("answered after %v; Retry-After or backoff asked for at least %v", took, fc.minDuration)
			}
			if fc.status == 200 {
				if a.TokenType != "bearer" || a.AccessToken == "" {
					t.Errorf("token_type %q, token %q", a.TokenType, a.AccessToken)
				}
				if fc.expiresIn != nil && !fc.expiresIn(a.ExpiresIn) {
					t.Errorf("expires_in = %d", a.ExpiresIn)
				}
				return
			}
			// Not poisoned: once the upstreams answer normally again, the
			// next answer is good. The rest of the script is dropped: a
			// Drop step may be consumed once or twice per attempt, as
			// net/http retries a GET by itself on a reused connection the
			// server closed, but not on a fresh one.
			f.ts.ClearScript(tenant, "genesys")
			f.login.ClearScript(id)
			next := s.token(t, tenant)
			remember(next.AccessToken)
			if next.Status != 200 || next.AccessToken == "" {
				t.Fatalf("after the fault: status %d code %q; want a token", next.Status, next.Code)
			}
		})
	}
	t.Cleanup(func() {
		// Runs after the parallel subtests: scan every log line.
		logs := s.stderr.String()
		if !strings.Contains(logs, `"level":"DEBUG"`) {
			t.Error("no debug lines captured; the scan would prove nothing")
		}
		mu.Lock()
		defer mu.Unlock()
		for _, secret := range secrets {
			if secret != "" && strings.Contains(logs, secret) {
				t.Errorf("the logs contain a secret, client ID or token: %.12s…", secret)
			}
		}
	})
}
