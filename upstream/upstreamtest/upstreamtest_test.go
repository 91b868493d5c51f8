package upstreamtest

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// httpClient opens a connection per request: net/http silently re-sends an
// idempotent request once when a reused connection drops, which would
// consume an extra scripted step.
func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func do(t *testing.T, c *http.Client, req *http.Request) (answer, error) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(b)}
	json.Unmarshal(b, &a.body)
	return a, nil
}

func get(t *testing.T, c *http.Client, url string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	a, err := do(t, c, req)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func tokenRequest(t *testing.T, base, auth, contentType, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

func basic(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(id+":"+secret))
}

const form = "application/x-www-form-urlencoded"

func TestTenantServiceAnswers(t *testing.T) {
	ts := NewTenantService()
	defer ts.Close()
	c := httpClient(t)
	ts.SetCredentials("../x", Credentials{ClientID: "id", ClientSecret: "sec", Region: "eu-west-1"})

	a := get(t, c, ts.URL()+"/tenants/..%2Fx/credentials/genesys")
	if a.status != 200 || a.body["clientId"] != "id" || a.body["clientSecret"] != "sec" || a.body["region"] != "eu-west-1" {
		t.Fatalf("got %d %s", a.status, a.raw)
	}
	if got := ts.Requests()[0].RequestURI; got != "/tenants/..%2Fx/credentials/genesys" {
		t.Errorf("recorded %q", got)
	}
	if ts.Calls("../x", "genesys") != 1 {
		t.Errorf("calls not counted under the unescaped tenant")
	}
	if a := get(t, c, ts.URL()+"/tenants/nobody/credentials/genesys"); a.status != 404 {
		t.Errorf("unknown tenant: %d", a.status)
	}
	if a := get(t, c, ts.URL()+"/other"); a.status != 404 {
		t.Errorf("other path: %d", a.status)
	}
	exp := time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	ts.SetStaticToken("acme", "whatsapp", "wa", exp)
	if a := get(t, c, ts.URL()+"/tenants/acme/credentials/whatsapp"); a.body["accessToken"] != "wa" || a.body["expiresAt"] != "2031-05-06T07:08:09Z" {
		t.Errorf("static token: %s", a.raw)
	}
	ts.SetBody("acme", "genesys", 200, []byte("not json"), "text/plain")
	if a := get(t, c, ts.URL()+"/tenants/acme/credentials/genesys"); a.raw != "not json" || a.header.Get("Content-Type") != "text/plain" {
		t.Errorf("raw body: %q %q", a.raw, a.header.Get("Content-Type"))
	}
	ts.RequireServiceName("auth-service")
	if a := get(t, c, ts.URL()+"/tenants/../x/credentials/genesys"); a.status != 404 {
		t.Errorf("unescaped traversal should not reach the tenant: %d", a.status)
	}
	if a := get(t, c, ts.URL()+"/tenants/..%2Fx/credentials/genesys"); a.status != 403 {
		t.Errorf("missing X-Service-Name: %d", a.status)
	}
	if ts.TotalCalls() != len(ts.Requests()) {
		t.Errorf("TotalCalls disagrees with Requests")
	}
}

func TestScriptSteps(t *testing.T) {
	ts := NewTenantService()
	defer ts.Close()
	c := httpClient(t)
	ts.SetCredentials("acme", Credentials{ClientID: "id", ClientSecret: "sec", Region: "eu-west-1"})
	u := ts.URL() + "/tenants/acme/credentials/genesys"
	ts.Script("acme", "genesys",
		Step{Status: 503, RetryAfter: "2", Header: http.Header{"X-Extra": {"1"}}},
		Step{Delay: 50 * time.Millisecond},
		Step{Drop: true},
		Step{Truncate: true},
		Step{Trickle: 100 * time.Millisecond},
	)
	if a := get(t, c, u); a.status != 503 || a.header.Get("Retry-After") != "2" || a.header.Get("X-Extra") != "1" {
		t.Errorf("step 1: %d %v", a.status, a.header)
	}
	start := time.Now()
	if a := get(t, c, u); a.status != 200 || time.Since(start) < 50*time.Millisecond {
		t.Errorf("step 2 (delay): %d after %s", a.status, time.Since(start))
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if _, err := do(t, c, req); err == nil {
		t.Error("step 3 (drop): no error")
	}
	req, _ = http.NewRequest(http.MethodGet, u, nil)
	if _, err := do(t, c, req); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("step 4 (truncate): %v, want unexpected EOF", err)
	}
	start = time.Now()
	if a := get(t, c, u); a.status != 200 || a.body["clientId"] != "id" || time.Since(start) < 90*time.Millisecond {
		t.Errorf("step 5 (trickle): %d %s after %s", a.status, a.raw, time.Since(start))
	}
	if a := get(t, c, u); a.status != 200 {
		t.Errorf("after the script: %d", a.status)
	}
	if n := ts.Calls("acme", "genesys"); n != 6 {
		t.Errorf("calls = %d, want 6", n)
	}
}

func TestClearScript(t *testing.T) {
	ts := NewTenantService()
	defer ts.Close()
	login := NewLogin()
	defer login.Close()
	c := httpClient(t)
	ts.SetCredentials("acme", Credentials{ClientID: "id", ClientSecret: "sec", Region: "eu-west-1"})
	u := ts.URL() + "/tenants/acme/credentials/genesys"
	ts.Script("acme", "genesys", Step{Status: 503}, Step{Status: 503}, Step{Status: 503})
	ts.Script("other", "genesys", Step{Status: 500})
	if a := get(t, c, u); a.status != 503 {
		t.Fatalf("before ClearScript: %d, want the scripted 503", a.status)
	}
	ts.ClearScript("acme", "genesys")
	if a := get(t, c, u); a.status != 200 {
		t.Errorf("after ClearScript: %d, want the normal answer", a.status)
	}
	if a := get(t, c, ts.URL()+"/tenants/other/credentials/genesys"); a.status != 500 {
		t.Errorf("another tenant's script: %d, want its 500 still queued", a.status)
	}

	login.AddClient("id", "sec")
	login.Script("id", Step{Status: 503})
	login.ClearScript("id")
	req, _ := http.NewRequest(http.MethodPost, login.URL()+"/oauth/token", strings.NewReader("grant_type=client_credentials"))
	req.SetBasicAuth("id", "sec")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if a, err := do(t, c, req); err != nil || a.status != 200 {
		t.Errorf("login after ClearScript: %v %v, want 200", a.status, err)
	}
}

func TestCloseEndsDelayedAnswers(t *testing.T) {
	ts := NewTenantService()
	ts.Script("acme", "genesys", Step{Delay: time.Hour})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
		resp, err := c.Get(ts.URL() + "/tenants/acme/credentials/genesys")
		if err == nil {
			resp.Body.Close()
		}
	}()
	for ts.TotalCalls() == 0 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { ts.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for the delayed answer")
	}
	<-done
}

func TestLoginAnswersLikeGenesys(t *testing.T) {
	l := NewLogin()
	defer l.Close()
	c := httpClient(t)
	l.AddClient("id", "s:e/c+r%t") // taken as is, never form-decoded
	l.AddClient("off", "x")
	l.DisableGrant("off")
	grant := "grant_type=client_credentials"

	cases := []struct {
		name               string
		req                *http.Request
		status             int
		error, description string
	}{
		{"unknown client", tokenRequest(t, l.URL(), basic("nobody", "x"), form, grant), 400, "invalid_client", "client not found"},
		{"no auth", tokenRequest(t, l.URL(), "", form, grant), 400, "invalid_client", "client not found"},
		{"bad secret", tokenRequest(t, l.URL(), basic("id", "wrong"), form, grant), 400, "invalid_client", "authentication failed"},
		{"form-encoded secret is wrong", tokenRequest(t, l.URL(), basic("id", "s%3Ae%2Fc%2Br%25t"), form, grant), 400, "invalid_client", "authentication failed"},
		{"grant disabled", tokenRequest(t, l.URL(), basic("off", "x"), form, grant), 400, "unauthorized_client", "client is not authorized to use the client_credential grant type"},
		{"json body", tokenRequest(t, l.URL(), basic("id", "s:e/c+r%t"), "application/json", `{"grant_type":"client_credentials"}`), 400, "invalid_request", ""},
		{"no grant", tokenRequest(t, l.URL(), basic("id", "s:e/c+r%t"), form, ""), 400, "invalid_request", ""},
		{"other grant", tokenRequest(t, l.URL(), basic("id", "s:e/c+r%t"), form, "grant_type=password"), 400, "unsupported_grant_type", ""},
	}
	for _, tc := range cases {
		a, err := do(t, c, tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if a.status != tc.status || a.body["error"] != tc.error || (tc.description != "" &&
			(a.body["description"] != tc.description || a.body["error_description"] != tc.description)) {
			t.Errorf("%s: %d %s", tc.name, a.status, a.raw)
		}
	}

	seen := map[string]bool{}
	for range 3 {
		a, err := do(t, c, tokenRequest(t, l.URL(), basic("id", "s:e/c+r%t"), form+"; charset=utf-8", grant))
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := a.body["access_token"].(string)
		if a.status != 200 || tok == "" || a.body["token_type"] != "bearer" || a.body["expires_in"] != float64(DefaultExpiresIn) {
			t.Fatalf("success: %d %s", a.status, a.raw)
		}
		if seen[tok] {
			t.Fatal("token issued twice")
		}
		seen[tok] = true
		if l.ClientOf(tok) != "id" {
			t.Errorf("ClientOf = %q", l.ClientOf(tok))
		}
	}
	l.SetExpiresIn("id", 0)
	if a, _ := do(t, c, tokenRequest(t, l.URL(), basic("id", "s:e/c+r%t"), form, grant)); a.body["expires_in"] != float64(0) {
		t.Errorf("SetExpiresIn(0): %s", a.raw)
	}
	l.SetDefaultExpiresIn(300)
	l.AddClient("fresh", "f")
	if a, _ := do(t, c, tokenRequest(t, l.URL(), basic("fresh", "f"), form, grant)); a.body["expires_in"] != float64(300) {
		t.Errorf("SetDefaultExpiresIn: %s", a.raw)
	}
	l.Script("id", RateLimitStep())
	a, _ := do(t, c, tokenRequest(t, l.URL(), basic("id", "s:e/c+r%t"), form, grant))
	if desc, _ := a.body["description"].(string); a.status != 400 || a.body["error"] != "invalid_request" || !strings.HasPrefix(desc, "rate limit exceeded") {
		t.Errorf("rate limit step: %d %s", a.status, a.raw)
	}
	if l.Calls("id") != 10 || l.Calls("nobody") != 1 {
		t.Errorf("calls: id %d, nobody %d", l.Calls("id"), l.Calls("nobody"))
	}
	if a := get(t, c, l.URL()+"/oauth/token"); a.status != 405 {
		t.Errorf("GET: %d", a.status)
	}
}

func TestDemoEndToEnd(t *testing.T) {
	d := NewDemo("ap-south-1")
	defer d.Close()
	c := httpClient(t)
	a := get(t, c, d.TenantService.URL()+"/tenants/t1/credentials/genesys")
	id, _ := a.body["clientId"].(string)
	secret, _ := a.body["clientSecret"].(string)
	if a.status != 200 || id == "" || secret == "" || a.body["region"] != "ap-south-1" {
		t.Fatalf("auto-provisioned: %d %s", a.status, a.raw)
	}
	if again := get(t, c, d.TenantService.URL()+"/tenants/t1/credentials/genesys"); again.body["clientSecret"] != secret {
		t.Error("auto-provisioned credentials changed")
	}
	if other := get(t, c, d.TenantService.URL()+"/tenants/t2/credentials/genesys"); other.body["clientSecret"] == secret {
		t.Error("two tenants share a secret")
	}
	if creds, ok := d.TenantService.CredentialsOf("t1"); !ok || creds.ClientID != id {
		t.Errorf("CredentialsOf: %v %v", creds, ok)
	}
	if wa := get(t, c, d.TenantService.URL()+"/tenants/t1/credentials/whatsapp"); wa.body["accessToken"] == nil {
		t.Errorf("auto static token: %s", wa.raw)
	}
	tok, err := do(t, c, tokenRequest(t, d.Login.URL(), basic(id, secret), form, "grant_type=client_credentials"))
	if err != nil || tok.status != 200 {
		t.Fatalf("exchange: %v %s", err, tok.raw)
	}
	access := tok.body["access_token"].(string)

	req, _ := http.NewRequest(http.MethodGet, d.API.URL()+"/api/v2/users/me?x=1", nil)
	req.Header.Set("Authorization", "Bearer "+access)
	if a, _ := do(t, c, req); a.status != 200 || a.body["path"] != "/api/v2/users/me" || a.body["query"] != "x=1" {
		t.Errorf("API: %d %s", a.status, a.raw)
	}
	d.Login.Revoke(access)
	req, _ = http.NewRequest(http.MethodGet, d.API.URL()+"/api/v2/users/me", nil)
	req.Header.Set("Authorization", "Bearer "+access)
	if a, _ := do(t, c, req); a.status != 401 {
		t.Errorf("revoked token: %d", a.status)
	}
}

// rawAnswer sends req over a fresh connection and returns every byte the
// fake wrote before it closed the connection.
func rawAnswer(t *testing.T, base string, req *http.Request) string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMalformedAnswers: each malformation breaks the answer on the wire as
// documented, with the secret in the broken bytes, for the Tenant Service
// and the login.
func TestMalformedAnswers(t *testing.T) {
	ts := NewTenantService()
	defer ts.Close()
	login := NewLogin()
	defer login.Close()
	ts.SetCredentials("acme", Credentials{ClientID: "id-acme", ClientSecret: "s3cr3t-acme", Region: "eu-west-1"})
	login.AddClient("id-acme", "s3cr3t-acme")

	check := func(t *testing.T, raw, secret string, m Malformation) {
		t.Helper()
		if !strings.Contains(raw, secret) {
			t.Fatalf("the broken answer does not carry the secret: %q", raw)
		}
		head, body, _ := strings.Cut(raw, "\r\n\r\n")
		switch m {
		case MissingStatusLine:
			if strings.HasPrefix(raw, "HTTP/") || strings.Contains(raw, "\r\n") {
				t.Errorf("not a bare body: %q", raw)
			}
		case HeaderWithoutColon:
			var bad int
			for _, line := range strings.Split(head, "\r\n")[1:] {
				if !strings.Contains(line, ":") {
					bad++
					if !strings.Contains(line, secret) {
						t.Errorf("the colon-less line %q lacks the secret", line)
					}
				}
			}
			if bad != 1 {
				t.Errorf("%d header lines without a colon, want 1: %q", bad, head)
			}
		case ShortContentLength:
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.ContentLength != int64(len(body)/2) {
				t.Errorf("Content-Length %d for a body of %d bytes", resp.ContentLength, len(body))
			}
		}
	}
	for _, m := range []Malformation{MissingStatusLine, HeaderWithoutColon, ShortContentLength} {
		t.Run(fmt.Sprint("tenant service ", m), func(t *testing.T) {
			ts.Script("acme", "genesys", Step{Malformed: m})
			req, _ := http.NewRequest(http.MethodGet, ts.URL()+"/tenants/acme/credentials/genesys", nil)
			check(t, rawAnswer(t, ts.URL(), req), "s3cr3t-acme", m)
		})
		t.Run(fmt.Sprint("login ", m), func(t *testing.T) {
			login.Script("id-acme", Step{Malformed: m})
			req := tokenRequest(t, login.URL(), basic("id-acme", "s3cr3t-acme"), form, "grant_type=client_credentials")
			raw := rawAnswer(t, login.URL(), req)
			if login.Issued() == 0 {
				t.Fatal("no token issued")
			}
			// The token is the one issued last: find it in the raw bytes.
			var found bool
			for _, tok := range login.IssuedTokens() {
				found = found || strings.Contains(raw, tok)
			}
			if !found {
				t.Fatalf("the broken answer does not carry an issued token: %q", raw)
			}
			check(t, raw, "access_token", m)
		})
	}
	t.Run("a status step", func(t *testing.T) {
		ts.Script("acme", "genesys", Step{Status: 500, Body: []byte(`{"error":"boom"}`), Malformed: HeaderWithoutColon})
		req, _ := http.NewRequest(http.MethodGet, ts.URL()+"/tenants/acme/credentials/genesys", nil)
		check(t, rawAnswer(t, ts.URL(), req), `{"error" "boom"}`, HeaderWithoutColon)
	})
}
