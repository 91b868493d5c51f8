package main

import (
	"fmt"
	"net/http"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// fakeRegion is the region of every invented credential.
const fakeRegion = "eu-west-1"

// failingTenants is how many tenants of each failing kind the fakes set up.
const failingTenants = 10

// fakes are the in-process upstreams the sidecar under test talks to: a
// Tenant Service that invents credentials for any tenant (AutoProvision) and
// the login that accepts them, except for a few tenants set to fail.
//
// They keep a log of every request (upstreamtest records them for tests), so
// the load tool's own memory grows with the number of misses: about 2 KiB
// per miss, a couple of GiB for the 1M flood.
type fakes struct {
	tenants *upstreamtest.TenantService
	login   *upstreamtest.Login
}

// notFoundTenant is the i-th tenant the Tenant Service answers 404 for
// (CREDENTIALS_NOT_FOUND, cached by the sidecar for -negative-ttl).
func notFoundTenant(i int) string { return fmt.Sprintf("fail-404-%d", i%failingTenants) }

// unavailableTenant is the i-th tenant the Tenant Service answers 503 for
// (TENANT_SERVICE_UNAVAILABLE after three attempts with backoff; not cached).
func unavailableTenant(i int) string { return fmt.Sprintf("fail-503-%d", i%failingTenants) }

func startFakes() *fakes {
	f := &fakes{login: upstreamtest.NewLogin(), tenants: upstreamtest.NewTenantService()}
	f.tenants.AutoProvision(fakeRegion, f.login)
	for i := range failingTenants {
		f.tenants.SetBody(notFoundTenant(i), "genesys", http.StatusNotFound, []byte(`{"error":"credentials not found"}`), "")
		f.tenants.SetBody(unavailableTenant(i), "genesys", http.StatusServiceUnavailable, []byte(`{"error":"unavailable"}`), "")
	}
	return f
}

// upstreamCalls counts the requests the fakes received.
type upstreamCalls struct {
	TenantService int `json:"tenant_service"`
	Login         int `json:"login"`
}

func (f *fakes) calls() upstreamCalls {
	return upstreamCalls{TenantService: f.tenants.TotalCalls(), Login: f.login.TotalCalls()}
}

func (c upstreamCalls) minus(o upstreamCalls) upstreamCalls {
	return upstreamCalls{TenantService: c.TenantService - o.TenantService, Login: c.Login - o.Login}
}

func (f *fakes) close() {
	f.tenants.Close()
	f.login.Close()
}
