package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestMisnamedTenantNeverGetsTheDefaultTenant is issue 10 item 8 through
// run(): with -default-tenant=alpha, a tenant sent under another name got
// alpha's token. Each is now 400 INVALID_REQUEST naming what was sent, and
// no upstream is called.
func TestMisnamedTenantNeverGetsTheDefaultTenant(t *testing.T) {
	f := newFakes(t)
	f.addTenant("alpha")
	f.addTenant("gamma")
	s := startSidecar(t, f.env(), "-default-tenant=alpha")
	for _, tc := range []struct {
		target string
		header map[string]string
		names  string
	}{
		{"/token?Tenant=gamma", nil, `"Tenant"`},
		{"/token?tenantId=gamma", nil, `"tenantId"`},
		{"/token?tenant[]=gamma", nil, `"tenant[]"`},
		{"/token?tenant%3Dgamma", nil, `"tenant=gamma"`},
		{"/token", map[string]string{"X_Tenant_ID": "gamma"}, `"X_tenant_id"`},
		{"/token", map[string]string{"X-TenantID": "gamma"}, `"X-Tenantid"`},
	} {
		a := do(t, http.MethodGet, s.tokenURL+tc.target, tc.header)
		if a.Status != http.StatusBadRequest || a.Code != "INVALID_REQUEST" || !strings.Contains(a.Message, tc.names) {
			t.Errorf("%s %v: %d %s %q; want 400 INVALID_REQUEST naming %s", tc.target, tc.header, a.Status, a.Code, a.Message, tc.names)
		}
	}
	if n := f.ts.TotalCalls() + f.login.TotalCalls(); n != 0 {
		t.Errorf("misnamed tenants made %d upstream calls", n)
	}
	// The names the contract gives still work, the header in any case.
	if a := do(t, http.MethodGet, s.tokenURL+"/token", map[string]string{"x-tenant-id": "gamma"}); a.Status != http.StatusOK {
		t.Errorf("x-tenant-id: %d %s", a.Status, a.Code)
	}
	if a := do(t, http.MethodGet, s.tokenURL+"/token?tenant=gamma&provider=genesys", nil); a.Status != http.StatusOK {
		t.Errorf("tenant and provider: %d %s", a.Status, a.Code)
	}
}

// TestAPIProxyRefusesPathFormsGatewaysMisread is issue 10 item 9 through
// run(): "/proxy//host/x" reached the API as "//host/x", and "..;" and
// "%2e%2e;" segments passed. Each form is 400 before any upstream call, and
// a well-formed path still goes through.
func TestAPIProxyRefusesPathFormsGatewaysMisread(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	api := newGenesysAPI(t, f.login)
	s := startSidecar(t, proxyEnv(f, api), "-default-tenant", "acme")
	send := func(path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, s.tokenURL+"/x", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = path // sent as it is, not cleaned
		req.Header.Set("X-Token-Request", "true")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b.Code
	}
	for _, p := range []string{
		"/proxy//evil.example/api/v2/users/me",
		"/proxy/api//v2/users/me",
		"/proxy/api/v2/..;/..;/token",
		"/proxy/api/v2/%2e%2e;/%2e%2e;/token",
		"/proxy/api/v2/.;x/users",
		"/proxy/api/v2/%2E%2e/x",
		"/proxy/api/v2/..%5C..%5Ctoken",
		"/proxy/api/v2/%252e%252e/token",
		"/proxy/api/v2/%2F%2Fevil",
	} {
		if status, code := send(p); status != http.StatusBadRequest || code != "INVALID_REQUEST" {
			t.Errorf("%s: %d %s; want 400 INVALID_REQUEST", p, status, code)
		}
	}
	if n := len(api.requests()) + int(f.ts.TotalCalls()+f.login.TotalCalls()); n != 0 {
		t.Fatalf("refused paths made %d upstream calls", n)
	}
	if status, code := send("/proxy/api/v2/users/me"); status != http.StatusOK {
		t.Errorf("a plain path: %d %s", status, code)
	}
}

// TestTokenRequestHeaderIsExactlyTrue is issue 10 item 10 through run().
func TestTokenRequestHeaderIsExactlyTrue(t *testing.T) {
	f := newFakes(t)
	f.addTenant("acme")
	s := startSidecar(t, f.env())
	for _, v := range []string{"TRUE", "True", "tRuE"} {
		a := do(t, http.MethodGet, s.tokenURL+"/token?tenant=acme", map[string]string{"X-Token-Request": v})
		if a.Status != http.StatusForbidden || a.Code != "REQUEST_HEADER_REQUIRED" {
			t.Errorf("X-Token-Request %q: %d %s; want 403 REQUEST_HEADER_REQUIRED", v, a.Status, a.Code)
		}
	}
	if n := f.ts.TotalCalls(); n != 0 {
		t.Errorf("%d Tenant Service calls", n)
	}
	if a := s.token(t, "acme"); a.Status != http.StatusOK {
		t.Errorf("true: %d %s", a.Status, a.Code)
	}
}
