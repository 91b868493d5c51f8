package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

func TestGetTokenAnswersTheCachedToken(t *testing.T) {
	fc := &fakeCache{}
	h := newTestHandler(t, fc, nil)

	rec := serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme"))

	b := decodeToken(t, rec)
	// One hour lifetime: margin 30 s, so 3570 s are usable.
	want := tokenBody{AccessToken: testAccessToken, TokenType: "bearer", ExpiresIn: 3570, ExpiresAt: "2026-11-29T01:59:30Z"}
	if b != want {
		t.Errorf("body = %+v, want %+v", b, want)
	}
	for header, want := range map[string]string{
		"Content-Type":  "application/json",
		"Cache-Control": "no-store",
		"Pragma":        "no-cache",
	} {
		if got := rec.Header().Get(header); got != want {
			t.Errorf("%s = %q, want %q", header, got, want)
		}
	}
	if got, want := fc.lastKey(t), (cache.Key{Provider: "genesys", Tenant: "acme"}); got != want {
		t.Errorf("cache key = %+v, want %+v", got, want)
	}
	if fc.gets.Load() != 1 || fc.refreshes.Load() != 0 {
		t.Errorf("gets, refreshes = %d, %d; want 1, 0", fc.gets.Load(), fc.refreshes.Load())
	}
}

func TestRefreshCallsRefresh(t *testing.T) {
	fc := &fakeCache{}
	h := newTestHandler(t, fc, nil)

	rec := serve(h, tokenRequest(http.MethodPost, "/token/refresh?tenant=acme"))

	if b := decodeToken(t, rec); b.AccessToken != testAccessToken || b.ExpiresIn != 3570 {
		t.Errorf("body = %+v", b)
	}
	if rec.Header().Get("Cache-Control") != "no-store" {
		t.Error("no Cache-Control: no-store")
	}
	if fc.gets.Load() != 0 || fc.refreshes.Load() != 1 {
		t.Errorf("gets, refreshes = %d, %d; want 0, 1", fc.gets.Load(), fc.refreshes.Load())
	}
}

func TestExpiresInAndExpiresAt(t *testing.T) {
	for _, tc := range []struct {
		name          string
		now           time.Time
		expiresAt     time.Time
		lifetime      time.Duration
		wantExpiresIn int64
		wantExpiresAt string
	}{
		{
			// Margin min(30 s, 10 s) = 10 s: 50 s left, 40 s usable.
			name: "margin is 10% of a short lifetime", now: testNow,
			expiresAt: testNow.Add(50 * time.Second), lifetime: 100 * time.Second,
			wantExpiresIn: 40, wantExpiresAt: "2026-11-29T01:00:40Z",
		},
		{
			name: "margin is 30 s for a Genesys day", now: testNow,
			expiresAt: testNow.Add(86399 * time.Second), lifetime: 86399 * time.Second,
			wantExpiresIn: 86369, wantExpiresAt: "2026-11-30T00:59:29Z",
		},
		{
			// 40.2 s usable rounds down to 40; expires_at drops the
			// fraction of now+40 s, so never promises more.
			name: "fractions round down", now: testNow.Add(700 * time.Millisecond),
			expiresAt: testNow.Add(50*time.Second + 900*time.Millisecond), lifetime: 100 * time.Second,
			wantExpiresIn: 40, wantExpiresAt: "2026-11-29T01:00:40Z",
		},
		{
			name: "at least 1 inside the margin", now: testNow,
			expiresAt: testNow.Add(5 * time.Second), lifetime: 100 * time.Second,
			wantExpiresIn: 1, wantExpiresAt: "2026-11-29T01:00:01Z",
		},
		{
			name: "at least 1 past expiry", now: testNow,
			expiresAt: testNow.Add(-time.Hour), lifetime: time.Hour,
			wantExpiresIn: 1, wantExpiresAt: "2026-11-29T01:00:01Z",
		},
		{
			name: "expires_at is UTC whatever the clock's zone", now: testNow.In(time.FixedZone("CET", 3600)),
			expiresAt: testNow.Add(50 * time.Second), lifetime: 100 * time.Second,
			wantExpiresIn: 40, wantExpiresAt: "2026-11-29T01:00:40Z",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) {
				return cache.Token{AccessToken: "t", ExpiresAt: tc.expiresAt, Lifetime: tc.lifetime}, nil
			}}
			h := newTestHandler(t, fc, func(c *Config) { c.Now = func() time.Time { return tc.now } })

			b := decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme")))

			if b.ExpiresIn != tc.wantExpiresIn || b.ExpiresAt != tc.wantExpiresAt {
				t.Errorf("expires_in, expires_at = %d, %s; want %d, %s", b.ExpiresIn, b.ExpiresAt, tc.wantExpiresIn, tc.wantExpiresAt)
			}
			at, err := time.Parse(time.RFC3339, b.ExpiresAt)
			if err != nil {
				t.Fatal(err)
			}
			if d := at.Sub(tc.now); d > time.Duration(b.ExpiresIn)*time.Second || d <= time.Duration(b.ExpiresIn-1)*time.Second {
				t.Errorf("expires_at is %v after now, not within the second before expires_in", d)
			}
		})
	}
}

func TestTokenType(t *testing.T) {
	for in, want := range map[string]string{"": "bearer", "bearer": "bearer", "Bearer": "bearer", "BEARER": "bearer", "MAC": "mac"} {
		fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) {
			tok := testToken()
			tok.TokenType = in
			return tok, nil
		}}
		h := newTestHandler(t, fc, nil)
		if b := decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme"))); b.TokenType != want {
			t.Errorf("token type %q answered as %q, want %q", in, b.TokenType, want)
		}
	}
}

func TestRequestHeaderCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		require bool
		values  []string // nil: no header
		target  string
		want    int
	}{
		{"missing", true, nil, "/token?tenant=acme", http.StatusForbidden},
		{"false", true, []string{"false"}, "/token?tenant=acme", http.StatusForbidden},
		{"empty", true, []string{""}, "/token?tenant=acme", http.StatusForbidden},
		{"1", true, []string{"1"}, "/token?tenant=acme", http.StatusForbidden},
		{"twice", true, []string{"true", "true"}, "/token?tenant=acme", http.StatusForbidden},
		{"true", true, []string{"true"}, "/token?tenant=acme", http.StatusOK},
		// The contract says exactly "true": no case folding, no spaces.
		{"TRUE", true, []string{"TRUE"}, "/token?tenant=acme", http.StatusForbidden},
		{"True", true, []string{"True"}, "/token?tenant=acme", http.StatusForbidden},
		{"tRUE", true, []string{"tRUE"}, "/token?tenant=acme", http.StatusForbidden},
		{"spaced", true, []string{" true"}, "/token?tenant=acme", http.StatusForbidden},
		{"TRUE on the proxy", true, []string{"TRUE"}, "/proxy/api/v2/x", http.StatusForbidden},
		{"checked before the tenant", true, nil, "/token?tenant=..", http.StatusForbidden},
		{"checked before the body", true, nil, "/token/refresh?tenant=acme", http.StatusForbidden},
		{"checked on unknown paths", true, nil, "/nope", http.StatusForbidden},
		{"off", false, nil, "/token?tenant=acme", http.StatusOK},
		{"off, unknown path", false, nil, "/nope", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeCache{}
			h := newTestHandler(t, fc, func(c *Config) { c.RequireRequestHeader = tc.require })
			method := http.MethodGet
			if strings.HasPrefix(tc.target, "/token/refresh") {
				method = http.MethodPost
			}
			r := httptest.NewRequest(method, tc.target, strings.NewReader("body"))
			if !strings.HasPrefix(tc.target, "/token/refresh") {
				r = httptest.NewRequest(method, tc.target, nil)
			}
			for _, v := range tc.values {
				r.Header.Add("X-Token-Request", v)
			}

			rec := serve(h, r)

			switch tc.want {
			case http.StatusOK:
				decodeToken(t, rec)
			case http.StatusForbidden:
				wantError(t, rec, http.StatusForbidden, "REQUEST_HEADER_REQUIRED")
				if fc.calls() != 0 {
					t.Errorf("cache called %d times", fc.calls())
				}
			default:
				wantError(t, rec, tc.want, "NOT_FOUND")
			}
		})
	}
}

func TestTenantResolution(t *testing.T) {
	for _, tc := range []struct {
		name          string
		target        string
		headers       []string // X-Tenant-ID values
		defaultTenant string
		wantTenant    string // "" → 400 INVALID_REQUEST
	}{
		{name: "query", target: "/token?tenant=acme", wantTenant: "acme"},
		{name: "header", target: "/token", headers: []string{"acme"}, wantTenant: "acme"},
		{name: "default", target: "/token", defaultTenant: "dflt", wantTenant: "dflt"},
		{name: "query wins over header", target: "/token?tenant=q", headers: []string{"h"}, defaultTenant: "d", wantTenant: "q"},
		{name: "header wins over default", target: "/token", headers: []string{"h"}, defaultTenant: "d", wantTenant: "h"},
		{name: "query escaped", target: "/token?tenant=a%2Db", wantTenant: "a-b"},
		{name: "query key escaped", target: "/token?%74enant=acme", wantTenant: "acme"},
		{name: "empty pairs ignored", target: "/token?&tenant=acme&&", wantTenant: "acme"},
		{name: "other parameters refused", target: "/token?x=%zz&tenant=acme&y", defaultTenant: "d"},
		{name: "128 characters", target: "/token?tenant=" + strings.Repeat("a", 128), wantTenant: strings.Repeat("a", 128)},
		{name: "none and no default", target: "/token"},
		{name: "empty query does not fall back", target: "/token?tenant=", defaultTenant: "d"},
		{name: "bare query key does not fall back", target: "/token?tenant", defaultTenant: "d"},
		{name: "empty header does not fall back", target: "/token", headers: []string{""}, defaultTenant: "d"},
		{name: "query twice", target: "/token?tenant=a&tenant=a"},
		{name: "header twice", target: "/token", headers: []string{"a", "b"}},
		{name: "semicolon in query", target: "/token?x=1;tenant=acme", defaultTenant: "d"},
		{name: "bad escape in value", target: "/token?tenant=a%zz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeCache{}
			h := newTestHandler(t, fc, func(c *Config) { c.DefaultTenant = tc.defaultTenant })
			r := tokenRequest(http.MethodGet, tc.target)
			for _, v := range tc.headers {
				r.Header.Add("X-Tenant-ID", v)
			}

			rec := serve(h, r)

			if tc.wantTenant == "" {
				wantError(t, rec, http.StatusBadRequest, "INVALID_REQUEST")
				if fc.calls() != 0 {
					t.Errorf("cache called %d times", fc.calls())
				}
				return
			}
			decodeToken(t, rec)
			if got := fc.lastKey(t).Tenant; got != tc.wantTenant {
				t.Errorf("tenant = %q, want %q", got, tc.wantTenant)
			}
		})
	}
}

func TestMalformedTenantsNeverReachTheCache(t *testing.T) {
	malformed := []string{
		"", "..", ".", ".hidden", "-a", "_a", "a/b", "a\\b", "a b", " a", "a ", "a\tb",
		"a\nb", "a\r\nX-Evil: 1", "a\x00", "a\x7f", "ü", "aé", "a%2e", "a:b", "a?b", "a#b",
		"a+b", "a@b", strings.Repeat("a", 129),
	}
	fc := &fakeCache{}
	logs := &logBuffer{}
	h := newTestHandler(t, fc, func(c *Config) {
		c.DefaultTenant = "dflt"
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	for _, tenant := range malformed {
		t.Run(fmt.Sprintf("%q", tenant), func(t *testing.T) {
			// In the header, as sent.
			r := tokenRequest(http.MethodGet, "/token")
			r.Header["X-Tenant-Id"] = []string{tenant}
			b := wantError(t, serve(h, r), http.StatusBadRequest, "INVALID_REQUEST")
			if len(tenant) >= 4 && strings.Contains(b.Message, tenant) {
				t.Errorf("message %q echoes the tenant", b.Message)
			}

			// In the query, escaped.
			r = tokenRequest(http.MethodGet, "/token?tenant="+escapeAll(tenant))
			wantError(t, serve(h, r), http.StatusBadRequest, "INVALID_REQUEST")
		})
	}
	// Escaped dot-segments in the query are unescaped first, then refused.
	for _, target := range []string{"/token?tenant=%2e%2e", "/token?tenant=%2E%2E", "/token?tenant=%2e", "/token?tenant=a%2Fb", "/token?tenant=a+b", "/token?tenant=%00"} {
		wantError(t, serve(h, tokenRequest(http.MethodGet, target)), http.StatusBadRequest, "INVALID_REQUEST")
	}
	if fc.calls() != 0 {
		t.Errorf("cache called %d times for malformed tenants", fc.calls())
	}
	for _, s := range []string{"X-Evil", strings.Repeat("a", 129)} {
		if strings.Contains(logs.String(), s) {
			t.Errorf("log holds the malformed tenant %q", s)
		}
	}
}

// escapeAll percent-encodes every byte of s.
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func TestAllowedTenants(t *testing.T) {
	fc := &fakeCache{}
	h := newTestHandler(t, fc, func(c *Config) { c.AllowedTenants = []string{"acme", "globex"} })

	decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=globex")))
	if fc.calls() != 1 {
		t.Fatalf("cache called %d times, want 1", fc.calls())
	}

	b := wantError(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=initech")), http.StatusForbidden, "TENANT_NOT_ALLOWED")
	if !strings.Contains(b.Message, "initech") {
		t.Errorf("message %q does not name the tenant", b.Message)
	}
	wantError(t, serve(h, tokenRequest(http.MethodPost, "/token/refresh?tenant=initech")), http.StatusForbidden, "TENANT_NOT_ALLOWED")
	// Malformed beats not allowed.
	wantError(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=..")), http.StatusBadRequest, "INVALID_REQUEST")
	if fc.calls() != 1 {
		t.Errorf("cache called %d times, want 1", fc.calls())
	}
}

func TestProviders(t *testing.T) {
	fc := &fakeCache{}
	h := newTestHandler(t, fc, nil)
	wantError(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme&provider=whatsapp")), http.StatusBadRequest, "INVALID_REQUEST")
	wantError(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme&provider=")), http.StatusBadRequest, "INVALID_REQUEST")
	wantError(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme&provider=GENESYS")), http.StatusBadRequest, "INVALID_REQUEST")
	wantError(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme&provider=genesys&provider=genesys")), http.StatusBadRequest, "INVALID_REQUEST")
	b := wantError(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme&provider=%0Aevil")), http.StatusBadRequest, "INVALID_REQUEST")
	if strings.Contains(b.Message, "evil") {
		t.Errorf("message %q echoes the provider", b.Message)
	}
	if fc.calls() != 0 {
		t.Fatalf("cache called %d times for unknown providers", fc.calls())
	}
	decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme&provider=genesys")))

	fc = &fakeCache{}
	h = newTestHandler(t, fc, func(c *Config) { c.Providers = []string{"genesys", "whatsapp"} })
	decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme&provider=whatsapp")))
	if got, want := fc.lastKey(t), (cache.Key{Provider: "whatsapp", Tenant: "acme"}); got != want {
		t.Errorf("key = %+v, want %+v", got, want)
	}
	decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme")))
	if got := fc.lastKey(t).Provider; got != "genesys" {
		t.Errorf("default provider = %q, want genesys", got)
	}
}

func TestRequestBodyRefused(t *testing.T) {
	fc := &fakeCache{}
	h := newTestHandler(t, fc, nil)
	withBody := func(method, target string) *http.Request {
		r := httptest.NewRequest(method, target, strings.NewReader(`{"tenant":"other"}`))
		r.Header.Set("X-Token-Request", "true")
		return r
	}

	wantError(t, serve(h, withBody(http.MethodGet, "/token?tenant=acme")), http.StatusBadRequest, "INVALID_REQUEST")
	wantError(t, serve(h, withBody(http.MethodPost, "/token/refresh?tenant=acme")), http.StatusBadRequest, "INVALID_REQUEST")
	chunked := withBody(http.MethodGet, "/token?tenant=acme")
	chunked.ContentLength = -1
	chunked.TransferEncoding = []string{"chunked"}
	wantError(t, serve(h, chunked), http.StatusBadRequest, "INVALID_REQUEST")
	if fc.calls() != 0 {
		t.Fatalf("cache called %d times", fc.calls())
	}

	empty := tokenRequest(http.MethodPost, "/token/refresh?tenant=acme")
	empty.Header.Set("Content-Length", "0")
	decodeToken(t, serve(h, empty))
}

func TestCacheErrors(t *testing.T) {
	for _, tc := range []struct {
		err            error
		wantStatus     int
		wantCode       string
		wantRetryAfter string
	}{
		{&codedError{code: "INVALID_REQUEST"}, 400, "INVALID_REQUEST", ""},
		{&codedError{code: "CREDENTIALS_NOT_FOUND"}, 404, "CREDENTIALS_NOT_FOUND", ""},
		{&codedError{code: "OAUTH_INVALID_GRANT"}, 502, "OAUTH_INVALID_GRANT", ""},
		{&codedError{code: "UPSTREAM_INVALID_RESPONSE"}, 502, "UPSTREAM_INVALID_RESPONSE", ""},
		{&codedError{code: "TENANT_SERVICE_UNAVAILABLE"}, 503, "TENANT_SERVICE_UNAVAILABLE", "5"},
		{&codedError{code: "TENANT_SERVICE_UNAVAILABLE", retryAfter: 1500 * time.Millisecond}, 503, "TENANT_SERVICE_UNAVAILABLE", "2"},
		{&codedError{code: "OAUTH_EXCHANGE_FAILED", retryAfter: time.Second}, 503, "OAUTH_EXCHANGE_FAILED", "1"},
		{&codedError{code: "OAUTH_EXCHANGE_FAILED", retryAfter: time.Millisecond}, 503, "OAUTH_EXCHANGE_FAILED", "1"},
		{&codedError{code: "OAUTH_EXCHANGE_FAILED", retryAfter: time.Hour}, 503, "OAUTH_EXCHANGE_FAILED", "60"},
		{fmt.Errorf("cache: fetch: %w", &codedError{code: "OAUTH_EXCHANGE_FAILED", retryAfter: 3 * time.Second}), 503, "OAUTH_EXCHANGE_FAILED", "3"},
		{fmt.Errorf("cache: %w", &codedError{code: "CREDENTIALS_NOT_FOUND"}), 404, "CREDENTIALS_NOT_FOUND", ""},
		// A per-attempt timeout inside an upstream error keeps the code.
		{&wrappingCoded{codedError{code: "TENANT_SERVICE_UNAVAILABLE"}, context.DeadlineExceeded}, 503, "TENANT_SERVICE_UNAVAILABLE", "5"},
		{fmt.Errorf("cache: %w", context.DeadlineExceeded), 504, "TIMEOUT", ""},
		{&codedError{code: "SOMETHING_NEW"}, 500, "INTERNAL_ERROR", ""},
		{&codedError{code: ""}, 500, "INTERNAL_ERROR", ""},
		{errors.New("cache: bug, secret s3cr3t"), 500, "INTERNAL_ERROR", ""},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				fail := func(context.Context, cache.Key) (cache.Token, error) { return cache.Token{}, tc.err }
				fc := &fakeCache{get: fail, refresh: func(ctx context.Context, key cache.Key, _ string) (cache.Token, error) { return fail(ctx, key) }}
				h := newTestHandler(t, fc, nil)
				target := "/token?tenant=acme"
				if method == http.MethodPost {
					target = "/token/refresh?tenant=acme"
				}

				rec := serve(h, tokenRequest(method, target))

				b := wantError(t, rec, tc.wantStatus, tc.wantCode)
				if got := rec.Header().Get("Retry-After"); got != tc.wantRetryAfter {
					t.Errorf("Retry-After = %q, want %q", got, tc.wantRetryAfter)
				}
				if rec.Header().Get("Pragma") != "no-cache" {
					t.Error("no Pragma: no-cache")
				}
				if tc.wantStatus != 500 && tc.wantStatus != 504 && !strings.Contains(b.Message, "acme") {
					t.Errorf("message %q does not name the tenant", b.Message)
				}
			}
		})
	}
}

type wrappingCoded struct {
	codedError
	err error
}

func (e *wrappingCoded) Unwrap() error { return e.err }

func TestEmptyAccessTokenIsAnInternalError(t *testing.T) {
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { return cache.Token{}, nil }}
	wantError(t, serve(newTestHandler(t, fc, nil), tokenRequest(http.MethodGet, "/token?tenant=acme")), 500, "INTERNAL_ERROR")
}

func TestRequestTimeout(t *testing.T) {
	const timeout = 50 * time.Millisecond
	block := func(ctx context.Context, _ cache.Key) (cache.Token, error) {
		if _, ok := ctx.Deadline(); !ok {
			return cache.Token{}, errors.New("no deadline on the cache's context")
		}
		<-ctx.Done()
		return cache.Token{}, fmt.Errorf("cache: waiting for the exchange: %w", ctx.Err())
	}
	for _, target := range []string{"/token?tenant=acme", "/token/refresh?tenant=acme"} {
		fc := &fakeCache{get: block, refresh: func(ctx context.Context, key cache.Key, _ string) (cache.Token, error) { return block(ctx, key) }}
		h := newTestHandler(t, fc, func(c *Config) { c.RequestTimeout = timeout })
		method := http.MethodGet
		if strings.HasPrefix(target, "/token/refresh") {
			method = http.MethodPost
		}

		start := time.Now()
		rec := serve(h, tokenRequest(method, target))
		elapsed := time.Since(start)

		wantError(t, rec, http.StatusGatewayTimeout, "TIMEOUT")
		if elapsed < timeout {
			t.Errorf("answered after %v, before the %v timeout", elapsed, timeout)
		}
		if rec.Header().Get("Retry-After") != "" {
			t.Error("504 with Retry-After")
		}
	}
}

func TestCallerGoneIsLoggedAtDebug(t *testing.T) {
	logs := &logBuffer{}
	fc := &fakeCache{get: func(ctx context.Context, _ cache.Key) (cache.Token, error) {
		<-ctx.Done()
		return cache.Token{}, ctx.Err()
	}}
	h := newTestHandler(t, fc, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx, cancel := context.WithCancel(context.Background())
	r := tokenRequest(http.MethodGet, "/token?tenant=acme").WithContext(ctx)
	time.AfterFunc(10*time.Millisecond, cancel)

	wantError(t, serve(h, r), http.StatusGatewayTimeout, "TIMEOUT")

	lines := logs.lines(t)
	if len(lines) != 1 || lines[0]["level"] != "DEBUG" || lines[0]["code"] != "TIMEOUT" {
		t.Errorf("log = %v, want one DEBUG line with code TIMEOUT", lines)
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	fc := &fakeCache{}
	h := newTestHandler(t, fc, nil)

	for _, tc := range []struct {
		method, target string
		status         int
		code, allow    string
	}{
		{http.MethodGet, "/", 404, "NOT_FOUND", ""},
		{http.MethodGet, "/nope", 404, "NOT_FOUND", ""},
		{http.MethodGet, "/token/", 404, "NOT_FOUND", ""},
		{http.MethodGet, "/tok%65n?tenant=acme", 404, "NOT_FOUND", ""},
		{http.MethodGet, "/metrics", 404, "NOT_FOUND", ""},
		{http.MethodPost, "/token?tenant=acme", 405, "METHOD_NOT_ALLOWED", "GET"},
		{http.MethodDelete, "/token?tenant=acme", 405, "METHOD_NOT_ALLOWED", "GET"},
		{http.MethodHead, "/token?tenant=acme", 405, "METHOD_NOT_ALLOWED", "GET"},
		{"PURGE", "/token?tenant=acme", 405, "METHOD_NOT_ALLOWED", "GET"},
		{http.MethodGet, "/token/refresh?tenant=acme", 405, "METHOD_NOT_ALLOWED", "POST"},
		{http.MethodPut, "/token/refresh?tenant=acme", 405, "METHOD_NOT_ALLOWED", "POST"},
	} {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			rec := serve(h, tokenRequest(tc.method, tc.target))
			if tc.method == http.MethodHead {
				// No body on HEAD (net/http would drop it anyway).
				if rec.Code != tc.status {
					t.Errorf("status = %d, want %d", rec.Code, tc.status)
				}
			} else {
				wantError(t, rec, tc.status, tc.code)
			}
			if got := rec.Header().Get("Allow"); tc.allow != "" && !strings.Contains(got, tc.allow) {
				t.Errorf("Allow = %q, want it to hold %s", got, tc.allow)
			}
		})
	}
	// OPTIONS is echo's: 204 with Allow.
	rec := serve(h, tokenRequest(http.MethodOptions, "/token"))
	if rec.Code != http.StatusNoContent || !strings.Contains(rec.Header().Get("Allow"), "GET") {
		t.Errorf("OPTIONS /token = %d Allow %q, want 204 with GET", rec.Code, rec.Header().Get("Allow"))
	}
	if fc.calls() != 0 {
		t.Errorf("cache called %d times", fc.calls())
	}
}

func TestPanicAnswers500AndIsLogged(t *testing.T) {
	logs := &logBuffer{}
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { panic("boom") }}
	h := newTestHandler(t, fc, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
	r := tokenRequest(http.MethodGet, "/token?tenant=acme")
	r.Header.Set("Authorization", "Bearer very-secret-bearer")

	wantError(t, serve(h, r), http.StatusInternalServerError, "INTERNAL_ERROR")

	out := logs.String()
	if !strings.Contains(out, "boom") || !strings.Contains(out, `"level":"ERROR"`) {
		t.Errorf("panic not logged at error:\n%s", out)
	}
	if strings.Contains(out, "very-secret-bearer") {
		t.Errorf("log holds the Authorization header:\n%s", out)
	}
}

func TestAbortHandlerPanicPropagates(t *testing.T) {
	fc := &fakeCache{get: func(context.Context, cache.Key) (cache.Token, error) { panic(http.ErrAbortHandler) }}
	h := newTestHandler(t, fc, nil)
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme"))
}

func TestRequestLog(t *testing.T) {
	logs := &logBuffer{}
	fc := &fakeCache{}
	h := newTestHandler(t, fc, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		c.AllowedTenants = []string{"acme"}
	})
	// Not "s3cr3t": the log holds the cache's error text, which upstream
	// errors keep free of secrets by contract (the fake's is not).
	secrets := []string{testAccessToken, "very-secret-bearer", "query-secret", "cookie-secret"}
	send := func(method, target string) {
		r := tokenRequest(method, target)
		r.Header.Set("Authorization", "Bearer very-secret-bearer")
		r.Header.Set("Cookie", "session=cookie-secret")
		serve(h, r)
	}

	send(http.MethodGet, "/token?tenant=acme")
	send(http.MethodGet, "/token?tenant=initech")
	fc.get = func(context.Context, cache.Key) (cache.Token, error) {
		return cache.Token{}, &codedError{code: "OAUTH_EXCHANGE_FAILED"}
	}
	send(http.MethodGet, "/token?tenant=acme")
	fc.get = func(context.Context, cache.Key) (cache.Token, error) { return cache.Token{}, errors.New("bug") }
	send(http.MethodGet, "/token?tenant=acme")
	// Refused (an unknown parameter); its value is not logged.
	send(http.MethodGet, "/token?tenant=acme&access_token=query-secret")

	out := logs.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("log holds %q:\n%s", s, out)
		}
	}
	lines := logs.lines(t)
	want := []struct {
		level  string
		status float64
		code   string
	}{{"DEBUG", 200, ""}, {"INFO", 403, "TENANT_NOT_ALLOWED"}, {"WARN", 503, "OAUTH_EXCHANGE_FAILED"}, {"ERROR", 500, "INTERNAL_ERROR"}}
	if len(lines) != len(want)+1 {
		t.Fatalf("%d log lines, want %d:\n%s", len(lines), len(want)+1, out)
	}
	if l := lines[len(want)]; l["level"] != "INFO" || l["status"] != 400.0 || l["code"] != "INVALID_REQUEST" {
		t.Errorf("refused request logged as %v, want INFO 400 INVALID_REQUEST", l)
	}
	wantTenants := []string{"acme", "initech", "acme", "acme"}
	for i, w := range want {
		l := lines[i]
		if l["level"] != w.level || l["status"] != w.status || l["method"] != "GET" || l["route"] != "/token" || l["tenant"] != wantTenants[i] {
			t.Errorf("line %d = %v, want level %s status %v route /token tenant %s", i, l, w.level, w.status, wantTenants[i])
		}
		if code, _ := l["code"].(string); code != w.code {
			t.Errorf("line %d code = %q, want %q", i, code, w.code)
		}
		if _, ok := l["duration"]; !ok {
			t.Errorf("line %d has no duration", i)
		}
	}
	if lines[2]["error"] == nil || lines[3]["error"] != "bug" {
		t.Errorf("upstream and internal errors not logged with their text: %v, %v", lines[2], lines[3])
	}
}

func TestNewTokenHandlerRefusesBadConfig(t *testing.T) {
	fc := &fakeCache{}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no cache", Config{}},
		{"malformed default tenant", Config{Cache: fc, DefaultTenant: "../x"}},
		{"malformed allowed tenant", Config{Cache: fc, AllowedTenants: []string{"ok", "not ok"}}},
		{"default tenant not allowed", Config{Cache: fc, DefaultTenant: "a", AllowedTenants: []string{"b"}}},
		{"negative timeout", Config{Cache: fc, RequestTimeout: -time.Second}},
		{"empty provider list", Config{Cache: fc, Providers: []string{}}},
		{"empty provider name", Config{Cache: fc, Providers: []string{"genesys", ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, err := NewTokenHandler(tc.cfg); err == nil || h != nil {
				t.Errorf("NewTokenHandler = %v, %v; want an error", h, err)
			}
		})
	}
	if _, err := NewTokenHandler(Config{Cache: fc, DefaultTenant: "a", AllowedTenants: []string{"a"}}); err != nil {
		t.Errorf("valid config refused: %v", err)
	}
}

func TestConcurrentRequests(t *testing.T) {
	fc := &fakeCache{}
	h := newTestHandler(t, fc, nil)
	done := make(chan struct{})
	for i := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 50 {
				rec := serve(h, tokenRequest(http.MethodGet, fmt.Sprintf("/token?tenant=t%d-%d", i, j)))
				if rec.Code != http.StatusOK {
					t.Errorf("status %d", rec.Code)
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	if fc.gets.Load() != 400 {
		t.Errorf("gets = %d, want 400", fc.gets.Load())
	}
}

// hitCache always has the token: the cached path, without the fake's
// bookkeeping. Like *cache.Cache, it has the Cached fast path.
type hitCache struct{ tok cache.Token }

func (c *hitCache) Get(context.Context, cache.Key) (cache.Token, error) { return c.tok, nil }
func (c *hitCache) Refresh(context.Context, cache.Key, string) (cache.Token, error) {
	return c.tok, nil
}
func (c *hitCache) Cached(context.Context, cache.Key) (cache.Token, bool) { return c.tok, true }

// fastPathCache is a fakeCache with the Cached fast path of *cache.Cache.
type fastPathCache struct {
	*fakeCache
	has    bool
	cached atomic.Int64
}

func (f *fastPathCache) Cached(ctx context.Context, key cache.Key) (cache.Token, bool) {
	f.cached.Add(1)
	f.record(key)
	if !f.has {
		return cache.Token{}, false
	}
	if _, ok := ctx.Deadline(); ok {
		panic("Cached got the request-timeout context")
	}
	return testToken(), true
}

// TestCachedFastPath: a GET /token the cache holds is answered by Cached,
// without Get; one it does not falls back to Get, within the request
// timeout; POST /token/refresh never asks Cached.
func TestCachedFastPath(t *testing.T) {
	withDeadline := func(ctx context.Context, _ cache.Key) (cache.Token, error) {
		if _, ok := ctx.Deadline(); !ok {
			return cache.Token{}, errors.New("no deadline on the cache's context")
		}
		return testToken(), nil
	}
	for _, tc := range []struct {
		name             string
		has              bool
		method, target   string
		cached, gets, rs int64
	}{
		{"hit", true, http.MethodGet, "/token?tenant=acme", 1, 0, 0},
		{"miss", false, http.MethodGet, "/token?tenant=acme", 1, 1, 0},
		{"refresh", true, http.MethodPost, "/token/refresh?tenant=acme", 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fastPathCache{fakeCache: &fakeCache{get: withDeadline, refresh: func(ctx context.Context, key cache.Key, _ string) (cache.Token, error) { return withDeadline(ctx, key) }}, has: tc.has}
			h, err := NewTokenHandler(Config{Cache: fc, RequireRequestHeader: true, Now: func() time.Time { return testNow }})
			if err != nil {
				t.Fatal(err)
			}
			rec := serve(h, tokenRequest(tc.method, tc.target))
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if got := decodeToken(t, rec); got.AccessToken != testToken().AccessToken {
				t.Errorf("access_token %q", got.AccessToken)
			}
			if fc.cached.Load() != tc.cached || fc.gets.Load() != tc.gets || fc.refreshes.Load() != tc.rs {
				t.Errorf("Cached %d, Get %d, Refresh %d; want %d, %d, %d",
					fc.cached.Load(), fc.gets.Load(), fc.refreshes.Load(), tc.cached, tc.gets, tc.rs)
			}
			if k := fc.lastKey(t); k != (cache.Key{Provider: "genesys", Tenant: "acme"}) {
				t.Errorf("key %v", k)
			}
		})
	}
}

// BenchmarkTokenHit measures GET /token answered from the cache, through the
// whole echo handler. Its allocations are all the recorder's
// (TestCachedHitDoesNotAllocate).
func BenchmarkTokenHit(b *testing.B) {
	h, err := NewTokenHandler(Config{Cache: &hitCache{tok: testToken()}, RequireRequestHeader: true, Now: func() time.Time { return testNow }})
	if err != nil {
		b.Fatal(err)
	}
	r := tokenRequest(http.MethodGet, "/token?tenant=acme&provider=genesys")
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
}
