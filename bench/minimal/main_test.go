package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// TestMinimalServesACachedToken: the reference does the token job the load
// tool measures — a miss through both fakes, then hits from its map.
func TestMinimalServesACachedToken(t *testing.T) {
	login, ts := upstreamtest.NewLogin(), upstreamtest.NewTenantService()
	ts.AutoProvision("mypurecloud.ie", login)
	t.Cleanup(login.Close)
	t.Cleanup(ts.Close)
	s := &sidecar{tenantService: ts.URL(), login: login.URL(), tokens: map[string]token{}}
	var first string
	for i := range 3 {
		r := httptest.NewRequest(http.MethodGet, "/token?tenant=acme", nil)
		r.Header.Set("X-Token-Request", "true")
		w := httptest.NewRecorder()
		s.serveToken(w, r)
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &body) != nil || body.AccessToken == "" {
			t.Fatalf("request %d: %d %s", i, w.Code, w.Body)
		}
		if i == 0 {
			first = body.AccessToken
		} else if body.AccessToken != first {
			t.Errorf("request %d: a new token, not the cached one", i)
		}
	}
	if n := ts.Calls("acme", "genesys"); n != 1 {
		t.Errorf("Tenant Service called %d times, want 1", n)
	}
}
