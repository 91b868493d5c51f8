package proxy

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// fakeCache is a TokenCache of function fields that counts its calls and
// remembers the keys it was asked for. A nil function answers testToken.
type fakeCache struct {
	get     func(ctx context.Context, key cache.Key) (cache.Token, error)
	refresh func(ctx context.Context, key cache.Key, refused string) (cache.Token, error)

	gets, refreshes atomic.Int64
	mu              sync.Mutex
	keys            []cache.Key
	refused         []string // the refused token of each Refresh
}

func (f *fakeCache) Get(ctx context.Context, key cache.Key) (cache.Token, error) {
	f.gets.Add(1)
	f.record(key)
	if f.get == nil {
		return testToken(), nil
	}
	return f.get(ctx, key)
}

func (f *fakeCache) Refresh(ctx context.Context, key cache.Key, refused string) (cache.Token, error) {
	f.refreshes.Add(1)
	f.record(key)
	f.mu.Lock()
	f.refused = append(f.refused, refused)
	f.mu.Unlock()
	if f.refresh == nil {
		return testToken(), nil
	}
	return f.refresh(ctx, key, refused)
}

func (f *fakeCache) record(key cache.Key) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = append(f.keys, key)
}

func (f *fakeCache) calls() int64 { return f.gets.Load() + f.refreshes.Load() }

func (f *fakeCache) lastKey(t *testing.T) cache.Key {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.keys) == 0 {
		t.Fatal("the cache was not called")
	}
	return f.keys[len(f.keys)-1]
}

// testNow is the injected clock of the tests.
var testNow = time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)

const testAccessToken = "tok-SECRET-abc123"

// testToken is a one-hour token granted at testNow.
func testToken() cache.Token {
	return cache.Token{
		AccessToken: testAccessToken,
		TokenType:   "bearer",
		ExpiresAt:   testNow.Add(time.Hour),
		Lifetime:    time.Hour,
	}
}

// codedError stands for an upstream error: it has the two methods the proxy
// reads, and a text that must never reach the caller.
type codedError struct {
	code       string
	retryAfter time.Duration
}

func (e *codedError) Error() string {
	return "upstream " + e.code + ": body {\"client_secret\":\"s3cr3t\"}"
}
func (e *codedError) ErrorCode() string         { return e.code }
func (e *codedError) RetryAfter() time.Duration { return e.retryAfter }

// newTestHandler builds a token handler on fc with the test clock and the
// header check on, then applies edit to the config.
func newTestHandler(t *testing.T, fc *fakeCache, edit func(*Config)) http.Handler {
	t.Helper()
	cfg := Config{Cache: fc, RequireRequestHeader: true, Now: func() time.Time { return testNow }}
	if edit != nil {
		edit(&cfg)
	}
	h, err := NewTokenHandler(cfg)
	if err != nil {
		t.Fatalf("NewTokenHandler: %v", err)
	}
	return h
}

// tokenRequest is a request with the X-Token-Request header.
func tokenRequest(method, target string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	r.Header.Set("X-Token-Request", "true")
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// tokenBody is the 200 body, decoded.
type tokenBody struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresAt   string `json:"expires_at"`
}

func decodeToken(t *testing.T, rec *httptest.ResponseRecorder) tokenBody {
	t.Helper()
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
	}
	var b tokenBody
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("decoding token body: %v", err)
	}
	return b
}

// wantError checks an error answer: status, JSON body with the code, and the
// headers every error answer carries.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) errorBody {
	t.Helper()
	body := rec.Body.String()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body %s", rec.Code, status, body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	var b errorBody
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		t.Fatalf("decoding error body %q: %v", body, err)
	}
	if b.Code != code {
		t.Errorf("code = %q, want %q (message %q)", b.Code, code, b.Message)
	}
	if b.Message == "" {
		t.Error("empty message")
	}
	for _, secret := range []string{testAccessToken, "s3cr3t", "client_secret"} {
		if strings.Contains(body, secret) {
			t.Errorf("error body %q holds %q", body, secret)
		}
	}
	if status == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	return b
}

// logBuffer is a concurrency-safe buffer for a JSON slog handler.
type logBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines decodes the JSON log lines.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	dec := json.NewDecoder(strings.NewReader(l.String()))
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF {
			return out
		} else if err != nil {
			t.Fatalf("log is not JSON lines: %v\n%s", err, l.String())
		}
		out = append(out, m)
	}
}
