package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// readyz is the admin listener's /readyz status.
func readyz(t *testing.T, s *sidecar) int {
	t.Helper()
	resp, err := client.Get(s.adminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, s *sidecar) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for readyz(t, s) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz never answered 200")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// -prefetch-tenants: /readyz answers 503 until each tenant is cached or
// failed terminally, and the first request for a prefetched tenant is a
// hit.
func TestPrefetchMakesReadyzWaitAndTheFirstRequestAHit(t *testing.T) {
	f := newFakes(t)
	f.addTenant("warm")
	f.ts.Script("warm", "genesys", upstreamtest.Step{Delay: 700 * time.Millisecond})
	s := startSidecar(t, f.env(), "-prefetch-tenants", "warm, genesys:ghost")
	if got := readyz(t, s); got != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during prefetch = %d, want 503", got)
	}
	waitReady(t, s)
	if a := s.token(t, "warm"); a.Status != http.StatusOK {
		t.Fatalf("GET /token = %d %s", a.Status, a.Code)
	}
	if n := f.ts.Calls("warm", "genesys"); n != 1 {
		t.Fatalf("Tenant Service called %d times for the prefetched tenant, want 1 (the first request a hit)", n)
	}
	if n := f.ts.Calls("ghost", "genesys"); n != 1 {
		t.Fatalf("Tenant Service called %d times for the unknown tenant, want 1 (404 is terminal)", n)
	}
	if !strings.Contains(s.stderr.String(), `"msg":"prefetch over"`) {
		t.Errorf("no prefetch log line:\n%s", s.stderr)
	}
}

// A prefetch that cannot finish does not hold /readyz past
// -prefetch-timeout.
func TestPrefetchTimeoutEndsTheWait(t *testing.T) {
	f := newFakes(t)
	f.addTenant("stuck")
	f.ts.Script("stuck", "genesys", upstreamtest.Step{Delay: 4 * time.Second})
	s := startSidecar(t, f.env(), "-prefetch-tenants", "stuck", "-prefetch-timeout", "300ms")
	waitReady(t, s)
	if !strings.Contains(s.stderr.String(), "prefetch gave up at -prefetch-timeout") {
		t.Errorf("no log line for the prefetch that gave up:\n%s", s.stderr)
	}
}

// An app refused with T1 that POSTs it after another app's forced refresh
// replaced it gets the newer token, with no exchange.
func TestRefreshWithTheRefusedTokenReturnsTheNewerOne(t *testing.T) {
	f := newFakes(t)
	id := f.addTenant("acme")
	s := startSidecar(t, f.env(), "-min-refresh-interval", "1ms")
	t1 := s.token(t, "acme")
	refresh := func(refused string) tokenAnswer {
		return do(t, http.MethodPost, s.tokenURL+"/token/refresh?tenant=acme", map[string]string{"Authorization": "Bearer " + refused})
	}
	t2 := refresh(t1.AccessToken)
	if t2.Status != http.StatusOK || t2.AccessToken == t1.AccessToken {
		t.Fatalf("first POST = %d, same token %v", t2.Status, t2.AccessToken == t1.AccessToken)
	}
	time.Sleep(5 * time.Millisecond) // past the minimum interval: only the refused token stops the exchange
	for range 3 {
		if got := refresh(t1.AccessToken); got.Status != http.StatusOK || got.AccessToken != t2.AccessToken {
			t.Fatalf("POST with the replaced token = %d, want the newer token", got.Status)
		}
	}
	if n := f.login.Calls(id); n != 2 {
		t.Fatalf("%d exchanges, want 2", n)
	}
	if strings.Contains(s.stderr.String(), t1.AccessToken) {
		t.Fatal("a refused token reached the log")
	}
}

// A forced refresh that fails transiently (the login down) keeps the token
// served: the 401 may have been spurious, and an outage must not turn into
// failed requests.
func TestTransientForcedRefreshFailureKeepsTheToken(t *testing.T) {
	f := newFakes(t)
	id := f.addTenant("acme")
	s := startSidecar(t, f.env(), "-oauth-max-retries", "0")
	t1 := s.token(t, "acme")
	f.login.Script(id, upstreamtest.Step{Status: http.StatusServiceUnavailable})
	if a := do(t, http.MethodPost, s.tokenURL+"/token/refresh?tenant=acme", nil); a.Status != http.StatusServiceUnavailable {
		t.Fatalf("POST = %d %s, want 503", a.Status, a.Code)
	}
	if a := s.token(t, "acme"); a.Status != http.StatusOK || a.AccessToken != t1.AccessToken {
		t.Fatalf("GET after the failed refresh = %d, want the refused token still served", a.Status)
	}
	if n := f.login.Calls(id); n != 2 {
		t.Fatalf("%d exchanges, want 2 (the GET was a hit)", n)
	}
}

// The cache's own settings are checked at start, naming the setting.
func TestCacheSettingsAreChecked(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"negative capacity":           {[]string{"-demo", "-negative-capacity", "0"}, nil, "-negative-capacity"},
		"refresh retry interval":      {[]string{"-demo", "-refresh-retry-interval", "100ms"}, nil, "-refresh-retry-interval"},
		"prefetch timeout":            {[]string{"-demo", "-prefetch-timeout", "0s"}, nil, "-prefetch-timeout"},
		"prefetch provider":           {[]string{"-demo", "-prefetch-tenants", "acme,slack:acme"}, nil, "unknown provider"},
		"prefetch tenant":             {[]string{"-demo", "-prefetch-tenants", "ok,../x"}, nil, "is not a valid tenant ID"},
		"prefetch outside allow-list": {[]string{"-demo", "-allowed-tenants", "acme", "-prefetch-tenants", "globex"}, nil, "is not in -allowed-tenants"},
		"prefetch from env":           {[]string{"-demo"}, map[string]string{"SIDECAR_PREFETCH_TENANTS": "whatsapp:"}, "is not a valid tenant ID"},
	} {
		t.Run(name, func(t *testing.T) {
			var stderr syncBuffer
			getenv := func(k string) string { return tc.env[k] }
			if err := run(t.Context(), tc.args, getenv, io.Discard, &stderr); err == nil {
				t.Fatal("run accepted the configuration")
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr does not say %q:\n%s", tc.want, stderr.String())
			}
		})
	}
}
