package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// apiRequest is what the fake API received.
type apiRequest struct {
	method     string
	requestURI string
	header     http.Header
	body       []byte
}

// fakeAPI is an httptest Genesys API: it records every request, body
// included, and answers with answer (nil: 200 "ok").
type fakeAPI struct {
	srv    *httptest.Server
	answer func(w http.ResponseWriter, r *http.Request, body []byte)

	mu   sync.Mutex
	reqs []apiRequest
}

func newFakeAPI(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeAPI {
	t.Helper()
	a := &fakeAPI{answer: answer}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		a.reqs = append(a.reqs, apiRequest{r.Method, r.RequestURI, r.Header.Clone(), body})
		a.mu.Unlock()
		if a.answer == nil {
			_, _ = io.WriteString(w, "ok")
			return
		}
		a.answer(w, r, body)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeAPI) requests() []apiRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]apiRequest(nil), a.reqs...)
}

// bearerAnswer answers 401 unless the bearer token is good, else 200 with
// the token in X-Seen-Token.
func bearerAnswer(good string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if tok != good {
			w.Header().Set("WWW-Authenticate", "Bearer")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"status":401}`)
			return
		}
		w.Header().Set("X-Seen-Token", tok)
		_, _ = io.WriteString(w, "retried-answer")
	}
}

// apiToken is a token for the fake API at base.
func apiToken(access, base string) cache.Token {
	tok := testToken()
	tok.AccessToken, tok.APIBaseURL = access, base
	return tok
}

// startProxy serves a token handler on a loopback server, as cmd does.
func startProxy(t *testing.T, fc *fakeCache, edit func(*Config)) string {
	t.Helper()
	h := newTestHandler(t, fc, edit)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// proxyDo sends a /proxy/ request with the X-Token-Request header.
func proxyDo(t *testing.T, method, url string, body io.Reader, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Token-Request", "true")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return resp, b
}

func TestAPIProxyForwardsWithTheTenantsToken(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("X-Api", "yes")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"42"}`)
	})
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) {
		return apiToken(testAccessToken, api.srv.URL+"/base/"), nil
	}}
	url := startProxy(t, fc, nil)

	header := http.Header{
		"X-Tenant-Id":     {"acme"},
		"Authorization":   {"Bearer app-token"},
		"Connection":      {"X-Hop"},
		"X-Hop":           {"1"},
		"X-Forwarded-For": {"6.6.6.6"},
		"Forwarded":       {"for=6.6.6.6"},
		"X-App":           {"kept"},
		"Content-Type":    {"application/json"},
	}
	const target = "/api/v2/things/a%2Fb/c?x=1&q=hello%20world&tenant=other&semi=a;b"
	resp, body := proxyDo(t, http.MethodPost, url+"/proxy"+target, strings.NewReader(`{"name":"n"}`), header)

	if resp.StatusCode != http.StatusCreated || string(body) != `{"id":"42"}` || resp.Header.Get("X-Api") != "yes" {
		t.Fatalf("answer %d %q X-Api %q; want the API's 201 unchanged", resp.StatusCode, body, resp.Header.Get("X-Api"))
	}
	reqs := api.requests()
	if len(reqs) != 1 {
		t.Fatalf("API got %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if got.method != http.MethodPost || got.requestURI != "/base"+target || string(got.body) != `{"name":"n"}` {
		t.Errorf("API got %s %s body %q; want POST /base%s with the body", got.method, got.requestURI, got.body, target)
	}
	if a := got.header.Get("Authorization"); a != "Bearer "+testAccessToken {
		t.Errorf("Authorization = %q, want the tenant's bearer token", a)
	}
	for _, h := range []string{"X-Token-Request", "X-Tenant-Id", "X-Hop", "X-Forwarded-For", "Forwarded", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if v, ok := got.header[h]; ok {
			t.Errorf("%s forwarded: %q", h, v)
		}
	}
	if got.header.Get("X-App") != "kept" || got.header.Get("Content-Type") != "application/json" {
		t.Errorf("app headers not forwarded: %v", got.header)
	}
	if k := fc.lastKey(t); k != (cache.Key{Provider: "genesys", Tenant: "acme"}) {
		t.Errorf("cache key = %+v; want genesys/acme from X-Tenant-ID, not the query", k)
	}
}

func TestAPIProxyTenantFromHeaderOrDefaultNeverQuery(t *testing.T) {
	api := newFakeAPI(t, nil)
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", api.srv.URL), nil }}
	url := startProxy(t, fc, func(c *Config) {
		c.DefaultTenant = "dflt"
		c.AllowedTenants = []string{"dflt", "acme"}
	})
	cases := []struct {
		name   string
		header http.Header
		status int
		tenant string
	}{
		{"default", nil, 200, "dflt"},
		{"header", http.Header{"X-Tenant-Id": {"acme"}}, 200, "acme"},
		{"empty header", http.Header{"X-Tenant-Id": {""}}, 400, ""},
		{"two headers", http.Header{"X-Tenant-Id": {"acme", "dflt"}}, 400, ""},
		{"malformed", http.Header{"X-Tenant-Id": {"../x"}}, 400, ""},
		{"not allowed", http.Header{"X-Tenant-Id": {"other"}}, 403, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := fc.calls()
			resp, body := proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x?tenant=acme", nil, tc.header)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			if tc.tenant == "" {
				if fc.calls() != before {
					t.Error("a refused request reached the cache")
				}
				return
			}
			if k := fc.lastKey(t); k.Tenant != tc.tenant || k.Provider != "genesys" {
				t.Errorf("key %+v, want genesys/%s", k, tc.tenant)
			}
		})
	}
}

func TestProxyPath(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"/proxy/api/v2/users/me", "/api/v2/users/me", true},
		{"/proxy/", "/", true},
		{"/proxy/api/a%2Fb", "/api/a%2Fb", true},
		{"/proxy/api/a..b/.c/d.", "/api/a..b/.c/d.", true},
		{"/proxy/../token", "", false},
		{"/proxy/api/..", "", false},
		{"/proxy/./api", "", false},
		{"/proxy/api/%2e%2e/x", "", false},
		{"/proxy/api/.%2E/x", "", false},
		{"/proxy/api/%2E", "", false},
		{"/proxy/api/..%2Fx", "", false},
		{"/proxy/api/x%2F..%2Fy", "", false},
		{"/proxy/api/..%5Cx", "", false},
		{"/proxy/api/%zz", "", false},
		{"/proxyx/api", "", false},
		// Issue 10 item 9: forms an intermediary misreads.
		{"/proxy/api/v2/", "/api/v2/", true}, // a trailing slash is no segment to misread
		{"/proxy/api/a;b=c/d", "/api/a;b=c/d", true},
		{"/proxy/api/%25/x", "/api/%25/x", true}, // a literal '%' is not an escape to undo again
		{"/proxy/api/a%2Fb%5Cc", "/api/a%2Fb%5Cc", true},
		{"/proxy//host/x", "", false},
		{"/proxy/api//x", "", false},
		{"/proxy/api/%2F/x", "", false},
		{"/proxy/api/a%2F%2Fb", "", false},
		{"/proxy/api/;x/y", "", false},
		{"/proxy/api/..;/token", "", false},
		{"/proxy/api/..;x/token", "", false},
		{"/proxy/api/.;/token", "", false},
		{"/proxy/api/.;x=1", "", false},
		{"/proxy/api/%2e%2e;/token", "", false},
		{"/proxy/api/%2E%2e;jsessionid=1/x", "", false},
		{"/proxy/api/.%2e/x", "", false},
		{"/proxy/api/%2e/x", "", false},
		{"/proxy/api/..%5C..%5Ctoken", "", false},
		{"/proxy/api/%5C..%5Cx", "", false},
		{"/proxy/api/..%5c", "", false},
		{"/proxy/api/%252e%252e/x", "", false},
		{"/proxy/api/%25252e%25252E/x", "", false},
		{"/proxy/api/%252e%252e%253b/x", "", false},
		{"/proxy/api/%252F%252F/x", "", false},
		{"/proxy/api/%255c..%255cx", "", false},
	} {
		got, err := proxyPath(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("proxyPath(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestAPITarget(t *testing.T) {
	for _, tc := range []struct{ base, rest, want string }{
		{"https://api.mypurecloud.ie", "/api/v2/users/me", "https://api.mypurecloud.ie/api/v2/users/me"},
		{"https://api.mypurecloud.ie/", "/api/v2/users/me", "https://api.mypurecloud.ie/api/v2/users/me"},
		{"http://127.0.0.1:8080/prefix", "/a%2Fb/c", "http://127.0.0.1:8080/prefix/a%2Fb/c"},
	} {
		u, err := apiTarget(tc.base, tc.rest)
		if err != nil || u.String() != tc.want {
			t.Errorf("apiTarget(%q, %q) = %v, %v; want %s", tc.base, tc.rest, u, err, tc.want)
		}
	}
	for _, base := range []string{"", "api.mypurecloud.ie", "ftp://x", "https://"} {
		if _, err := apiTarget(base, "/x"); err == nil {
			t.Errorf("apiTarget(%q) accepted", base)
		}
	}
}

func TestAPIProxyRefusesDotSegmentsBeforeAnyCall(t *testing.T) {
	api := newFakeAPI(t, nil)
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", api.srv.URL), nil }}
	url := startProxy(t, fc, nil)
	for _, p := range []string{"/proxy/../token", "/proxy/api/%2e%2e/%2e%2e/token", "/proxy/api/..%2F..%2Ftoken", "/proxy/api/v2/./x",
		"/proxy//evil.example/x", "/proxy/api//x", "/proxy/api/..;/..;/token", "/proxy/api/%2e%2e;/token", "/proxy/api/.;x/y",
		`/proxy/api/..\token`, "/proxy/api/..%5ctoken", "/proxy/api/%252e%252e/token"} {
		req, err := http.NewRequest(http.MethodGet, url+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = p // sent as it is, not cleaned
		req.Header.Set("X-Token-Request", "true")
		req.Header.Set("X-Tenant-ID", "acme")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), codeInvalidRequest) {
			t.Errorf("%s: %d %s; want 400 INVALID_REQUEST", p, resp.StatusCode, body)
		}
	}
	if fc.calls() != 0 || len(api.requests()) != 0 {
		t.Fatalf("dot segments reached the cache (%d calls) or the API (%d)", fc.calls(), len(api.requests()))
	}
}

func TestAPIProxyNeedsTheRequestHeader(t *testing.T) {
	api := newFakeAPI(t, nil)
	fc := &fakeCache{}
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	req, _ := http.NewRequest(http.MethodGet, url+"/proxy/api/v2/x", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || fc.calls() != 0 || len(api.requests()) != 0 {
		t.Fatalf("status %d, cache calls %d, API calls %d; want 403 and none", resp.StatusCode, fc.calls(), len(api.requests()))
	}
}

func TestAPIProxyMethods(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("X-Method", r.Method)
		_, _ = w.Write(body)
	})
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", api.srv.URL), nil }}
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	for _, m := range apiProxyMethods {
		var body io.Reader
		if m != http.MethodGet && m != http.MethodHead {
			body = strings.NewReader("body of " + m)
		}
		resp, got := proxyDo(t, m, url+"/proxy/api/v2/x", body, nil)
		if resp.StatusCode != 200 || resp.Header.Get("X-Method") != m {
			t.Errorf("%s: status %d, API saw %q", m, resp.StatusCode, resp.Header.Get("X-Method"))
		}
		if body != nil && string(got) != "body of "+m {
			t.Errorf("%s: body came back as %q", m, got)
		}
	}
	for _, m := range []string{http.MethodTrace, http.MethodConnect} {
		req, _ := http.NewRequest(m, url+"/proxy/api/v2/x", nil)
		req.Header.Set("X-Token-Request", "true")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: status %d, want 405", m, resp.StatusCode)
		}
	}
}

// retryCache hands out "old", and "new" on Refresh.
func retryCache(base string, refreshed string) *fakeCache {
	return &fakeCache{
		get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("old", base), nil },
		refresh: func(context.Context, cache.Key, string) (cache.Token, error) {
			return apiToken(refreshed, base), nil
		},
	}
}

func TestAPIProxyRetriesA401OnceWithARefreshedToken(t *testing.T) {
	api := newFakeAPI(t, bearerAnswer("new"))
	fc := retryCache(api.srv.URL, "new")
	logs := &logBuffer{}
	url := startProxy(t, fc, func(c *Config) {
		c.DefaultTenant = "acme"
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})

	resp, body := proxyDo(t, http.MethodPut, url+"/proxy/api/v2/x?secret-query=1", strings.NewReader("payload"), nil)

	if resp.StatusCode != 200 || string(body) != "retried-answer" || resp.Header.Get("X-Seen-Token") != "new" {
		t.Fatalf("answer %d %q; want the retried 200", resp.StatusCode, body)
	}
	if fc.refreshes.Load() != 1 {
		t.Errorf("refreshes = %d, want 1", fc.refreshes.Load())
	}
	reqs := api.requests()
	if len(reqs) != 2 {
		t.Fatalf("API got %d requests, want 2", len(reqs))
	}
	for i, r := range reqs {
		if r.method != http.MethodPut || string(r.body) != "payload" || r.requestURI != "/api/v2/x?secret-query=1" {
			t.Errorf("attempt %d: %s %s %q; want the same request", i+1, r.method, r.requestURI, r.body)
		}
	}
	if reqs[1].header.Get("Authorization") != "Bearer new" {
		t.Errorf("retry Authorization = %q", reqs[1].header.Get("Authorization"))
	}
	var line map[string]any
	for _, l := range logs.lines(t) {
		if l["msg"] == "api request proxied" {
			line = l
		}
	}
	if line == nil || line["level"] != "INFO" || line["retried"] != true || line["route"] != "/proxy/*" ||
		line["tenant"] != "acme" || line["status"] != float64(200) || line["method"] != "PUT" {
		t.Errorf("log line = %v", line)
	}
	for _, secret := range []string{"old", "new", "secret-query", "Bearer"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log holds %q:\n%s", secret, logs)
		}
	}
}

func TestAPIProxyPassesASecond401Back(t *testing.T) {
	api := newFakeAPI(t, bearerAnswer("never"))
	fc := retryCache(api.srv.URL, "new")
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })

	resp, body := proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x", nil, nil)

	if resp.StatusCode != http.StatusUnauthorized || string(body) != `{"status":401}` || resp.Header.Get("WWW-Authenticate") != "Bearer" {
		t.Fatalf("answer %d %q; want the API's 401", resp.StatusCode, body)
	}
	if n := len(api.requests()); n != 2 || fc.refreshes.Load() != 1 {
		t.Fatalf("API requests %d, refreshes %d; want 2 and 1", n, fc.refreshes.Load())
	}
}

func TestAPIProxyDoesNotRetryWithTheSameToken(t *testing.T) {
	api := newFakeAPI(t, bearerAnswer("new"))
	fc := retryCache(api.srv.URL, "old") // rate-limited: Refresh gives back the refused token
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })

	resp, _ := proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x", nil, nil)

	if resp.StatusCode != http.StatusUnauthorized || len(api.requests()) != 1 || fc.refreshes.Load() != 1 {
		t.Fatalf("status %d, API requests %d, refreshes %d; want 401, 1, 1", resp.StatusCode, len(api.requests()), fc.refreshes.Load())
	}
}

func TestAPIProxyBodyLimitForRetries(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool
		retried bool
	}{
		{"1 MiB", maxReplayBody, false, true},
		{"1 MiB chunked", maxReplayBody, true, true},
		{"1 MiB + 1", maxReplayBody + 1, false, false},
		{"3 MiB chunked", 3 * maxReplayBody, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := newFakeAPI(t, bearerAnswer("new"))
			fc := retryCache(api.srv.URL, "new")
			url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
			payload := bytes.Repeat([]byte("0123456789abcdef"), tc.size/16+1)[:tc.size]
			var body io.Reader = bytes.NewReader(payload)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			resp, _ := proxyDo(t, http.MethodPost, url+"/proxy/upload", body, nil)
			reqs := api.requests()
			for i, r := range reqs {
				if !bytes.Equal(r.body, payload) {
					t.Errorf("attempt %d: body of %d bytes, want the %d sent", i+1, len(r.body), len(payload))
				}
			}
			if tc.retried {
				if resp.StatusCode != 200 || len(reqs) != 2 {
					t.Fatalf("status %d after %d attempts; want 200 after 2", resp.StatusCode, len(reqs))
				}
				return
			}
			if resp.StatusCode != http.StatusUnauthorized || len(reqs) != 1 {
				t.Fatalf("status %d after %d attempts; want the 401 after 1", resp.StatusCode, len(reqs))
			}
			if fc.refreshes.Load() != 1 {
				t.Errorf("refreshes = %d; want 1, so that the app's own retry gets a new token", fc.refreshes.Load())
			}
		})
	}
}

func TestAPIProxyTokenErrorsAreTheTokenAPIs(t *testing.T) {
	api := newFakeAPI(t, bearerAnswer("new"))
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) {
		return cache.Token{}, &codedError{code: codeTenantServiceUnavailable}
	}}
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	resp, body := proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x", nil, nil)
	if resp.StatusCode != 503 || !strings.Contains(string(body), codeTenantServiceUnavailable) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("Get failing: %d %s; want 503 TENANT_SERVICE_UNAVAILABLE with Retry-After", resp.StatusCode, body)
	}

	fc = retryCache(api.srv.URL, "")
	fc.refresh = func(context.Context, cache.Key, string) (cache.Token, error) {
		return cache.Token{}, &codedError{code: codeOAuthInvalidGrant}
	}
	url = startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	resp, body = proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x", nil, nil)
	if resp.StatusCode != 502 || !strings.Contains(string(body), codeOAuthInvalidGrant) || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Refresh failing after a 401: %d %s; want 502 OAUTH_INVALID_GRANT JSON", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "s3cr3t") {
		t.Errorf("error body leaks the upstream error: %s", body)
	}
}

func TestAPIProxyAPIFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", dead), nil }}
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	resp, body := proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x", nil, nil)
	if resp.StatusCode != 502 || !strings.Contains(string(body), codeUpstreamInvalidResponse) {
		t.Errorf("API unreachable: %d %s; want 502 UPSTREAM_INVALID_RESPONSE", resp.StatusCode, body)
	}

	slow := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	fc = &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", slow.srv.URL), nil }}
	tr := NewAPITransport()
	tr.ResponseHeaderTimeout = 100 * time.Millisecond
	url = startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme"; c.APITransport = tr })
	resp, body = proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x", nil, nil)
	if resp.StatusCode != 504 || !strings.Contains(string(body), codeTimeout) {
		t.Errorf("API too slow: %d %s; want 504 TIMEOUT", resp.StatusCode, body)
	}
}

// TestAPIProxyOutlivesTheServerTimeouts runs the proxy in a server whose
// read and write timeouts are much shorter than an upload and a streamed
// answer: the /proxy/ request must get APIProxyTimeout instead.
func TestAPIProxyOutlivesTheServerTimeouts(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/plain")
		for i := range 8 {
			_, _ = w.Write([]byte{'a' + byte(i)})
			http.NewResponseController(w).Flush()
			time.Sleep(100 * time.Millisecond)
		}
	})
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) {
		return apiToken("t", api.srv.URL), nil
	}}
	h := newTestHandler(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ReadTimeout = 300 * time.Millisecond
	srv.Config.WriteTimeout = 300 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)

	// An upload that takes 800 ms, past the read timeout.
	pr, pw := io.Pipe()
	go func() {
		for range 8 {
			time.Sleep(100 * time.Millisecond)
			_, _ = pw.Write([]byte("x"))
		}
		pw.Close()
	}()
	resp, body := proxyDo(t, http.MethodPost, srv.URL+"/proxy/slow", pr, nil)
	if resp.StatusCode != 200 || string(body) != "abcdefgh" {
		t.Fatalf("status %d body %q; want 200 abcdefgh, streamed past the server's timeouts", resp.StatusCode, body)
	}
	if reqs := api.requests(); len(reqs) != 1 || string(reqs[0].body) != "xxxxxxxx" {
		t.Fatalf("API got %v", reqs)
	}

	// The bound still holds: APIProxyTimeout ends a stream that goes on.
	h = newTestHandler(t, fc, func(c *Config) { c.DefaultTenant = "acme"; c.APIProxyTimeout = 250 * time.Millisecond })
	srv2 := httptest.NewServer(h)
	t.Cleanup(srv2.Close)
	req, _ := http.NewRequest(http.MethodGet, srv2.URL+"/proxy/slow", nil)
	req.Header.Set("X-Token-Request", "true")
	resp2, err := http.DefaultClient.Do(req)
	if err == nil {
		b, rerr := io.ReadAll(resp2.Body)
		resp2.Body.Close()
		if rerr == nil && string(b) == "abcdefgh" {
			t.Fatalf("a stream longer than APIProxyTimeout was served whole")
		}
	}
}

func TestAPIProxyForwardsInformationalAnswers(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("X-Final", "1")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "final")
	})
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", api.srv.URL), nil }}
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	resp, body := proxyDo(t, http.MethodGet, url+"/proxy/x", nil, nil)
	if resp.StatusCode != http.StatusAccepted || string(body) != "final" || resp.Header.Get("X-Final") != "1" {
		t.Fatalf("answer %d %q; want the final 202 after the 103", resp.StatusCode, body)
	}
}

func TestAPIProxyConfig(t *testing.T) {
	_, err := NewTokenHandler(Config{Cache: &fakeCache{}, APIProxyTimeout: -time.Second})
	if err == nil {
		t.Fatal("a negative APIProxyTimeout was accepted")
	}
	if !strings.Contains(err.Error(), "APIProxyTimeout") {
		t.Errorf("error %q does not name the field", err)
	}
}

func TestAPIProxyLogsAnAnswerCutMidStream(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "part")
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	})
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return apiToken("t", api.srv.URL), nil }}
	logs := &logBuffer{}
	url := startProxy(t, fc, func(c *Config) {
		c.DefaultTenant = "acme"
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	req, _ := http.NewRequest(http.MethodGet, url+"/proxy/x", nil)
	req.Header.Set("X-Token-Request", "true")
	// Headers and the first bytes may still be in the server's buffer when
	// the connection is dropped: the app sees either no answer or a short one.
	if resp, err := http.DefaultClient.Do(req); err == nil {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Fatalf("the cut answer (%q) reached the app as if whole", b)
		}
	}
	var line map[string]any
	for _, l := range logs.lines(t) {
		if l["msg"] == "api request proxied" {
			line = l
		}
	}
	if line == nil || line["aborted"] != true || line["status"] != float64(200) {
		t.Fatalf("log line = %v; want aborted true, status 200", line)
	}
}
