package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// POST /token/refresh names the token the app was refused with in
// Authorization: Bearer; the handler hands it to the cache, and nothing else.
func TestRefreshPassesTheRefusedToken(t *testing.T) {
	for _, tc := range []struct {
		authorization, want string
	}{
		{"", ""},
		{"Bearer refused-abc", "refused-abc"},
		{"bearer refused-abc", "refused-abc"},
		{"Bearer  refused-abc ", "refused-abc"},
		{"Basic dXNlcjpwYXNz", ""},
		{"Bearer", ""},
	} {
		t.Run(tc.authorization, func(t *testing.T) {
			fc := &fakeCache{}
			logs := &logBuffer{}
			h := newTestHandler(t, fc, func(c *Config) {
				c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			})
			r := tokenRequest(http.MethodPost, "/token/refresh?tenant=acme")
			if tc.authorization != "" {
				r.Header.Set("Authorization", tc.authorization)
			}
			decodeToken(t, serve(h, r))
			if len(fc.refused) != 1 || fc.refused[0] != tc.want {
				t.Fatalf("refused = %q, want [%q]", fc.refused, tc.want)
			}
			if tc.want != "" && strings.Contains(logs.String(), tc.want) {
				t.Fatal("the refused token reached the log")
			}
		})
	}
}

// The API proxy's 401 retry names the token the API refused.
func TestAPIProxy401PassesTheRefusedToken(t *testing.T) {
	api := newFakeAPI(t, bearerAnswer("new"))
	fc := retryCache(api.srv.URL, "new")
	url := startProxy(t, fc, func(c *Config) { c.DefaultTenant = "acme" })
	resp, _ := proxyDo(t, http.MethodGet, url+"/proxy/api/v2/x", nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.refused) != 1 || fc.refused[0] != "old" {
		t.Fatalf("refused = %q, want [old]", fc.refused)
	}
}

// realCache is a cache.Cache on src with the given settings, closed with t.
func realCache(t *testing.T, src cache.SourceFunc, edit func(*cache.Config)) *cache.Cache {
	t.Helper()
	cfg := cache.Config{Source: src}
	if edit != nil {
		edit(&cfg)
	}
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// A fetch that waited its whole FetchTimeout for a slot has stopped: its
// callers get 503 with Retry-After, not the 504 of a caller whose own wait
// ran out while the fetch goes on.
func TestSlotStarvedFetchAnswers503(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	tokens := realCache(t, func(_ context.Context, req cache.FetchRequest) (cache.Token, error) {
		if req.Key.Tenant == "holder" {
			<-block
		}
		return cache.Token{AccessToken: "t", ExpiresAt: time.Now().Add(time.Hour), Lifetime: time.Hour}, nil
	}, func(c *cache.Config) {
		c.MaxConcurrentFetches = 1
		c.FetchTimeout = 50 * time.Millisecond
	})
	h, err := NewTokenHandler(Config{Cache: tokens, RequireRequestHeader: true})
	if err != nil {
		t.Fatal(err)
	}
	go serve(h, tokenRequest(http.MethodGet, "/token?tenant=holder"))
	time.Sleep(10 * time.Millisecond) // the holder takes the only slot
	rec := serve(h, tokenRequest(http.MethodGet, "/token?tenant=waiter"))
	wantError(t, rec, http.StatusServiceUnavailable, "TENANT_SERVICE_UNAVAILABLE")
}

// A POST inside -min-refresh-interval after a failed forced exchange gets
// that error as a 503 with a Retry-After up to the interval's end, and makes
// no upstream call — a transient failure (the token stays served) and a
// terminal one (the client was rejected) alike: "its error as a 503".
func TestRefreshInsideTheIntervalAnswersTheIntervalsError(t *testing.T) {
	for _, tt := range []struct {
		code        string
		firstStatus int // the POST that made the forced exchange
		transient   bool
	}{
		{code: "OAUTH_EXCHANGE_FAILED", firstStatus: http.StatusServiceUnavailable, transient: true},
		{code: "OAUTH_INVALID_GRANT", firstStatus: http.StatusBadGateway},
	} {
		t.Run(tt.code, func(t *testing.T) {
			calls := 0
			failing := false
			tokens := realCache(t, func(context.Context, cache.FetchRequest) (cache.Token, error) {
				calls++
				if failing {
					return cache.Token{}, &codedError{code: tt.code}
				}
				return cache.Token{AccessToken: "t1", ExpiresAt: time.Now().Add(time.Hour), Lifetime: time.Hour}, nil
			}, func(c *cache.Config) { c.MinRefreshInterval = 30 * time.Second })
			h, err := NewTokenHandler(Config{Cache: tokens, RequireRequestHeader: true})
			if err != nil {
				t.Fatal(err)
			}
			decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme")))
			failing = true
			wantError(t, serve(h, tokenRequest(http.MethodPost, "/token/refresh?tenant=acme")), tt.firstStatus, tt.code)
			rec := serve(h, tokenRequest(http.MethodPost, "/token/refresh?tenant=acme"))
			wantError(t, rec, http.StatusServiceUnavailable, tt.code)
			if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 29 || ra > 30 {
				t.Fatalf("Retry-After = %q, want the interval's end (30 s)", rec.Header().Get("Retry-After"))
			}
			if calls != 2 {
				t.Fatalf("%d upstream calls, want 2 (the miss and one forced exchange)", calls)
			}
			if !tt.transient {
				return
			}
			// The failure was transient: GET still serves the token.
			if b := decodeToken(t, serve(h, tokenRequest(http.MethodGet, "/token?tenant=acme"))); b.AccessToken != "t1" {
				t.Fatalf("GET = %q, want t1", b.AccessToken)
			}
			var limited *cache.RefreshLimitedError
			_, err = tokens.Refresh(context.Background(), cache.Key{Provider: "genesys", Tenant: "acme"}, "")
			if !errors.As(err, &limited) {
				t.Fatalf("Refresh = %v, want a RefreshLimitedError", err)
			}
		})
	}
}
