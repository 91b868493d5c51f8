package main

import (
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
