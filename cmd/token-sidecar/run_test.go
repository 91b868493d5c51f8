package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// syncBuffer is an io.Writer safe for the concurrent writes of a running
// sidecar and the reads of a test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakes are a fake Tenant Service and Genesys login for one test.
type fakes struct {
	ts    *upstreamtest.TenantService
	login *upstreamtest.Login
}

func newFakes(t *testing.T) *fakes {
	t.Helper()
	f := &fakes{ts: upstreamtest.NewTenantService(), login: upstreamtest.NewLogin()}
	t.Cleanup(f.ts.Close)
	t.Cleanup(f.login.Close)
	return f
}

// addTenant gives tenant working credentials in eu-west-1 and returns its
// client ID.
func (f *fakes) addTenant(tenant string) string {
	id := "client-" + tenant
	secret := "secret-" + tenant + "-s3cr3t"
	f.ts.SetCredentials(tenant, upstreamtest.Credentials{ClientID: id, ClientSecret: secret, Region: "eu-west-1"})
	f.login.AddClient(id, secret)
	return id
}

func (f *fakes) env() map[string]string {
	return map[string]string{
		"SIDECAR_TENANT_SERVICE_URL": f.ts.URL(),
		"SIDECAR_GENESYS_LOGIN_URL":  f.login.URL(),
	}
}

// sidecar is a sidecar started through run's code path, on ":0" ports.
type sidecar struct {
	tokenURL, adminURL string
	stdout, stderr     *syncBuffer
	cancel             context.CancelFunc
	done               chan error
}

func startSidecar(t *testing.T, env map[string]string, args ...string) *sidecar {
	t.Helper()
	return startSidecarWith(t, env, nil, args...)
}

// stop cancels the sidecar's context, as SIGTERM does, and returns run's error.
func (s *sidecar) stop(t *testing.T) error {
	t.Helper()
	s.cancel()
	select {
	case err, ok := <-s.done:
		if ok {
			close(s.done)
		}
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("sidecar did not stop")
		return nil
	}
}

var client = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 100, MaxConnsPerHost: 0},
}

type tokenAnswer struct {
	Status      int
	Header      http.Header
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	ExpiresIn   int       `json:"expires_in"`
	ExpiresAt   time.Time `json:"expires_at"`
	Code        string    `json:"code"`
	Message     string    `json:"message"`
}

// do sends a request with the X-Token-Request header and decodes the answer.
func do(t testing.TB, method, url string, header map[string]string) tokenAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Token-Request", "true")
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return tokenAnswer{}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var a tokenAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Errorf("%s %s: status %d, body not JSON: %q", method, url, resp.StatusCode, body)
	}
	a.Status, a.Header = resp.StatusCode, resp.Header
	return a
}

func (s *sidecar) token(t testing.TB, tenant string) tokenAnswer {
	t.Helper()
	return do(t, http.MethodGet, s.tokenURL+"/token?tenant="+tenant, nil)
}

func TestColdStampedeMakesOneFetchAndOneExchange(t *testing.T) {
	f := newFakes(t)
	client := f.addTenant("acme")
	// Hold the credentials answer so that every request arrives while the
	// first fetch is in flight.
	f.ts.Script("acme", "genesys", upstreamtest.Step{Delay: 500 * time.Millisecond})
	s := startSidecar(t, f.env())

	const callers = 1000
	answers := make([]tokenAnswer, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { answers[i] = s.token(t, "acme") })
	}
	wg.Wait()
	for i, a := range answers {
		if a.Status != http.StatusOK || a.AccessToken != answers[0].AccessToken {
			t.Fatalf("caller %d: status %d token %q; want 200 and the shared token (ts calls %d, exchanges %d, first %q)", i, a.Status, a.AccessToken, f.ts.Calls("acme", "genesys"), f.login.Calls(client), answers[0].AccessToken)
		}
	}
	if got := f.login.ClientOf(answers[0].AccessToken); got != client {
		t.Fatalf("token was issued to %q, want %q", got, client)
	}
	if n := f.ts.Calls("acme", "genesys"); n != 1 {
		t.Errorf("Tenant Service calls = %d, want 1", n)
	}
	if n := f.login.Calls(client); n != 1 {
		t.Errorf("exchanges = %d, want 1", n)
	}
}

func TestManyTenantsGetTheirOwnTokens(t *testing.T) {
	f := newFakes(t)
	const tenants, perTenant = 100, 8
	clients := map[string]string{}
	for i := range tenants {
		name := fmt.Sprintf("tenant-%03d", i)
		clients[name] = f.addTenant(name)
	}
	s := startSidecar(t, f.env())
	type result struct{ tenant, token string }
	results := make(chan result, tenants*perTenant)
	var wg sync.WaitGroup
	for name := range clients {
		for range perTenant {
			wg.Go(func() {
				a := s.token(t, name)
				if a.Status != http.StatusOK {
					t.Errorf("%s: status %d %s", name, a.Status, a.Code)
				}
				results <- result{name, a.AccessToken}
			})
		}
	}
	wg.Wait()
	close(results)
	seen := map[string]string{}
	for r := range results {
		if got := f.login.ClientOf(r.token); got != clients[r.tenant] {
			t.Fatalf("%s got a token issued to %q", r.tenant, got)
		}
		if prev, ok := seen[r.tenant]; ok && prev != r.token {
			t.Fatalf("%s got two different tokens", r.tenant)
		}
		seen[r.tenant] = r.token
	}
	for name, id := range clients {
		if n := f.ts.Calls(name, "genesys"); n != 1 {
			t.Errorf("%s: Tenant Service calls = %d, want 1", name, n)
		}
		if n := f.login.Calls(id); n != 1 {
			t.Errorf("%s: exchanges = %d, want 1", name, n)
		}
	}
}

func TestSequentialHitsFetchOnce(t *testing.T) {
	f := newFakes(t)
	id := f.addTenant("acme")
	s := startSidecar(t, f.env())
	first := s.token(t, "acme")
	for range 100 {
		if a := s.token(t, "acme"); a.Status != http.StatusOK || a.AccessToken != first.AccessToken {
			t.Fatalf("hit: status %d, token changed: %v", a.Status, a.AccessToken != first.AccessToken)
		}
	}
	if f.ts.TotalCalls() != 1 || f.login.Calls(id) != 1 {
		t.Fatalf("Tenant Service calls %d, exchanges %d; want 1 and 1", f.ts.TotalCalls(), f.login.Calls(id))
	}
	if got := first.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", got)
	}
	if first.TokenType != "bearer" || first.ExpiresIn < 86399-31 || first.ExpiresIn > 86399-30 {
		t.Errorf("token_type %q expires_in %d; want bearer and 86399 minus the 30 s margin", first.TokenType, first.ExpiresIn)
	}
	if d := time.Until(first.ExpiresAt) - time.Duration(first.ExpiresIn)*time.Second; d > 2*time.Second || d < -2*time.Second {
		t.Errorf("expires_at %v does not match expires_in %d", first.ExpiresAt, first.ExpiresIn)
	}
}

func TestEveryErrorCodeWithItsStatus(t *testing.T) {
	f := newFakes(t)
	f.addTenant("good")
	f.addTenant("ts-400")
	f.ts.SetBody("ts-400", "genesys", http.StatusBadRequest, []byte(`{"error":"bad"}`), "application/json")
	f.ts.SetBody("ts-down", "genesys", http.StatusServiceUnavailable, []byte(`{}`), "application/json")
	f.ts.SetCredentials("bad-secret", upstreamtest.Credentials{ClientID: "c-bad", ClientSecret: "wrong", Region: "eu-west-1"})
	f.login.AddClient("c-bad", "right")
	f.ts.SetCredentials("bad-region", upstreamtest.Credentials{ClientID: "c-region", ClientSecret: "s", Region: "mars-north-1"})
	id := f.addTenant("login-down")
	f.login.Script(id, upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503}, upstreamtest.Step{Status: 503})
	s := startSidecar(t, f.env(), "-allowed-tenants", "good,ts-400,unknown,ts-down,bad-secret,bad-region,login-down")

	cases := []struct {
		name   string
		method string
		path   string
		header map[string]string
		status int
		code   string
	}{
		{"ok", "GET", "/token?tenant=good", nil, 200, ""},
		{"malformed tenant", "GET", "/token?tenant=a%2Fb", nil, 400, "INVALID_REQUEST"},
		{"no tenant", "GET", "/token", nil, 400, "INVALID_REQUEST"},
		{"unknown provider", "GET", "/token?tenant=good&provider=slack", nil, 400, "INVALID_REQUEST"},
		{"tenant service 400", "GET", "/token?tenant=ts-400", nil, 400, "INVALID_REQUEST"},
		{"no request header", "GET", "/token?tenant=good", map[string]string{"X-Token-Request": ""}, 403, "REQUEST_HEADER_REQUIRED"},
		{"not allowed", "GET", "/token?tenant=other", nil, 403, "TENANT_NOT_ALLOWED"},
		{"not found", "GET", "/token?tenant=unknown", nil, 404, "CREDENTIALS_NOT_FOUND"},
		{"rejected client", "GET", "/token?tenant=bad-secret", nil, 502, "OAUTH_INVALID_GRANT"},
		{"unknown region", "GET", "/token?tenant=bad-region", nil, 502, "UPSTREAM_INVALID_RESPONSE"},
		{"tenant service down", "GET", "/token?tenant=ts-down", nil, 503, "TENANT_SERVICE_UNAVAILABLE"},
		{"login down", "GET", "/token?tenant=login-down", nil, 503, "OAUTH_EXCHANGE_FAILED"},
		{"refresh ok", "POST", "/token/refresh?tenant=good", nil, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := do(t, tc.method, s.tokenURL+tc.path, tc.header)
			if a.Status != tc.status || a.Code != tc.code {
				t.Fatalf("status %d code %q (%s); want %d %q", a.Status, a.Code, a.Message, tc.status, tc.code)
			}
			if tc.status == 503 && a.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
			if tc.status != 200 && a.Header.Get("Content-Type") != "application/json" && !strings.HasPrefix(a.Header.Get("Content-Type"), "application/json") {
				t.Errorf("error Content-Type = %q", a.Header.Get("Content-Type"))
			}
		})
	}
}

func TestCallersWaitRunsOutButTheExchangeIsCached(t *testing.T) {
	f := newFakes(t)
	f.addTenant("slow")
	f.ts.Script("slow", "genesys", upstreamtest.Step{Delay: time.Second})
	s := startSidecar(t, f.env(), "-request-timeout", "200ms")
	if a := s.token(t, "slow"); a.Status != 504 || a.Code != "TIMEOUT" {
		t.Fatalf("status %d code %q; want 504 TIMEOUT", a.Status, a.Code)
	}
	// The exchange goes on after the 504 and its result is cached.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if a := s.token(t, "slow"); a.Status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exchange behind the 504 was not cached")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := f.ts.Calls("slow", "genesys"); n != 1 {
		t.Errorf("slow tenant: Tenant Service calls = %d, want 1", n)
	}
}

func TestMalformedTenantsNeverReachAnUpstream(t *testing.T) {
	f := newFakes(t)
	s := startSidecar(t, f.env())
	bad := []string{
		"..", "a%2Fb", "a/b", strings.Repeat("a", 129), "a%20b", "%20a", "a%00b", "a%0Ab", "a%7Fb",
		"%C3%A9t%C3%A9", "-leading-dash", ".hidden", "_x", "a%3Bb", "%2E%2E", "a%5Cb",
	}
	for _, tenant := range bad {
		if a := s.token(t, tenant); a.Status != 400 || a.Code != "INVALID_REQUEST" {
			t.Errorf("tenant %q: status %d code %q; want 400 INVALID_REQUEST", tenant, a.Status, a.Code)
		}
		if a := do(t, "GET", s.tokenURL+"/token", map[string]string{"X-Tenant-ID": tenant}); a.Status != 400 {
			t.Errorf("X-Tenant-ID %q: status %d; want 400", tenant, a.Status)
		}
	}
	if n := f.ts.TotalCalls() + f.login.TotalCalls(); n != 0 {
		t.Fatalf("malformed tenants made %d upstream calls", n)
	}
	if a := s.token(t, strings.Repeat("a", 128)); a.Status == 400 {
		t.Fatalf("a 128-character tenant ID was refused")
	}
}
