package main

import (
	"net/http"
	"testing"
	"time"
)

// whatsapp asks the sidecar for tenant's WhatsApp token.
func (s *sidecar) whatsapp(t *testing.T, tenant string) tokenAnswer {
	t.Helper()
	return do(t, http.MethodGet, s.tokenURL+"/token?provider=whatsapp&tenant="+tenant, nil)
}

// waitForToken polls until tenant's WhatsApp token is want, and returns how
// long that took.
func (s *sidecar) waitForToken(t *testing.T, tenant, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		a := s.whatsapp(t, tenant)
		if a.Status != http.StatusOK {
			t.Fatalf("status %d %s while waiting for the rotated token", a.Status, a.Code)
		}
		if a.AccessToken == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("the rotated token was not served within %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWhatsAppServesTheTenantServiceTokenAndPicksUpRotation(t *testing.T) {
	t.Parallel()
	f := newFakes(t)
	f.ts.SetStaticToken("acme", "whatsapp", "wa-token-1", time.Time{})
	s := startSidecar(t, f.env(), "-static-token-ttl", "1s")

	a := s.whatsapp(t, "acme")
	if a.Status != http.StatusOK || a.AccessToken != "wa-token-1" || a.TokenType != "bearer" {
		t.Fatalf("status %d token %q type %q; want 200, the Tenant Service's token, bearer", a.Status, a.AccessToken, a.TokenType)
	}
	// Lifetime 1 s, margin 100 ms: at most 1 s left, and at least 1.
	if a.ExpiresIn != 1 || time.Until(a.ExpiresAt) > 2*time.Second {
		t.Errorf("expires_in %d expires_at %v; want the 1 s TTL", a.ExpiresIn, a.ExpiresAt)
	}
	// Cached: a second request inside the TTL makes no Tenant Service call.
	if b := do(t, http.MethodGet, s.tokenURL+"/token?provider=whatsapp", map[string]string{"X-Tenant-ID": "acme"}); b.AccessToken != "wa-token-1" {
		t.Fatalf("X-Tenant-ID: token %q", b.AccessToken)
	}
	if n := f.ts.Calls("acme", "whatsapp"); n != 1 {
		t.Errorf("Tenant Service calls = %d, want 1 inside the TTL", n)
	}

	// The Tenant Service rotates the token: served once the TTL has run.
	f.ts.SetStaticToken("acme", "whatsapp", "wa-token-2", time.Time{})
	s.waitForToken(t, "acme", "wa-token-2", 3*time.Second)

	if n := f.login.TotalCalls(); n != 0 {
		t.Errorf("%d calls to the Genesys login; a WhatsApp token needs no exchange", n)
	}
	// The Genesys token of the same tenant is another cache entry.
	if f.ts.Calls("acme", "genesys") != 0 {
		t.Error("the WhatsApp token made a Genesys credentials call")
	}
}

func TestWhatsAppExpiresAtBoundsTheTTL(t *testing.T) {
	t.Parallel()
	f := newFakes(t)
	expires := time.Now().Add(3 * time.Second).Truncate(time.Second)
	f.ts.SetStaticToken("acme", "whatsapp", "wa-short-1", expires)
	s := startSidecar(t, f.env(), "-static-token-ttl", "1h")

	a := s.whatsapp(t, "acme")
	if a.Status != http.StatusOK || a.AccessToken != "wa-short-1" {
		t.Fatalf("status %d token %q", a.Status, a.AccessToken)
	}
	if a.ExpiresIn < 1 || a.ExpiresIn > 3 || a.ExpiresAt.After(expires) {
		t.Errorf("expires_in %d expires_at %v; want at most until expiresAt %v, not the 1 h TTL", a.ExpiresIn, a.ExpiresAt, expires)
	}
	f.ts.SetStaticToken("acme", "whatsapp", "wa-short-2", time.Now().Add(time.Hour))
	s.waitForToken(t, "acme", "wa-short-2", 5*time.Second)
	if n := f.login.TotalCalls(); n != 0 {
		t.Errorf("%d calls to the Genesys login", n)
	}
}

func TestWhatsAppErrors(t *testing.T) {
	f := newFakes(t)
	f.ts.SetStaticToken("expired", "whatsapp", "wa-old", time.Now().Add(-time.Minute))
	f.ts.SetBody("empty", "whatsapp", http.StatusOK, []byte(`{"accessToken":""}`), "")
	s := startSidecar(t, f.env())
	for _, tc := range []struct {
		tenant string
		status int
		code   string
	}{
		{"unknown", 404, "CREDENTIALS_NOT_FOUND"},
		{"expired", 502, "UPSTREAM_INVALID_RESPONSE"},
		{"empty", 502, "UPSTREAM_INVALID_RESPONSE"},
	} {
		if a := s.whatsapp(t, tc.tenant); a.Status != tc.status || a.Code != tc.code {
			t.Errorf("%s: status %d code %q; want %d %s", tc.tenant, a.Status, a.Code, tc.status, tc.code)
		}
	}
	if n := f.login.TotalCalls(); n != 0 {
		t.Errorf("%d calls to the Genesys login", n)
	}
}
