package proxy

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestMisnamedTenantIsRefused is issue 10 item 8: with a default tenant, a
// tenant named under another parameter or a misspelt header used to get the
// default tenant's token. Every such request is now 400 INVALID_REQUEST
// naming what it sent, and never reaches the cache.
func TestMisnamedTenantIsRefused(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target string
		header string // a header name sent with the value gamma; "" for none
		names  string // what the message must name
	}{
		{name: "Tenant", target: "/token?Tenant=gamma", names: `"Tenant"`},
		{name: "tenantId", target: "/token?tenantId=gamma", names: `"tenantId"`},
		{name: "tenant[]", target: "/token?tenant[]=gamma", names: `"tenant[]"`},
		{name: "tenant%5B%5D", target: "/token?tenant%5B%5D=gamma", names: `"tenant[]"`},
		{name: "tenant%3Dgamma", target: "/token?tenant%3Dgamma", names: `"tenant=gamma"`},
		{name: "beside a good tenant", target: "/token?tenant=acme&x=1", names: `"x"`},
		{name: "empty key", target: "/token?=gamma", names: `""`},
		{name: "cache buster", target: "/token?_=1700000000", names: `"_"`},
		{name: "refresh too", target: "/token/refresh?Tenant=gamma", names: `"Tenant"`},
		{name: "X_Tenant_ID", target: "/token", header: "X_Tenant_ID", names: `"X_tenant_id"`},
		{name: "X-TenantID", target: "/token", header: "X-TenantID", names: `"X-Tenantid"`},
		{name: "Tenant-ID", target: "/token", header: "Tenant-ID", names: `"Tenant-Id"`},
		{name: "TenantId", target: "/token", header: "TenantId", names: `"Tenantid"`},
		{name: "X-Tenant", target: "/token", header: "X-Tenant", names: `"X-Tenant"`},
		{name: "X-Tennant-ID", target: "/token", header: "X-Tennant-ID", names: `"X-Tennant-Id"`},
		{name: "XTenantId", target: "/token", header: "XTenantId", names: `"Xtenantid"`},
		{name: "X.Tenant.ID", target: "/token", header: "X.Tenant.ID", names: `"X.tenant.id"`},
		{name: "misspelt header beside the query", target: "/token?tenant=acme", header: "X_Tenant_ID", names: `"X_tenant_id"`},
		{name: "misspelt header on the API proxy", target: "/proxy/api/v2/users/me", header: "X_Tenant_ID", names: `"X_tenant_id"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fc := &fakeCache{}
			h := newTestHandler(t, fc, func(c *Config) { c.DefaultTenant = "alpha" })
			method := http.MethodGet
			if strings.HasPrefix(tc.target, "/token/refresh") {
				method = http.MethodPost
			}
			r := tokenRequest(method, tc.target)
			if tc.header != "" {
				r.Header.Set(tc.header, "gamma")
			}
			b := wantError(t, serve(h, r), http.StatusBadRequest, "INVALID_REQUEST")
			if !strings.Contains(b.Message, tc.names) {
				t.Errorf("message %q does not name %s", b.Message, tc.names)
			}
			if fc.calls() != 0 {
				t.Errorf("cache called %d times", fc.calls())
			}
		})
	}
}

// TestWellNamedTenantStillServed: the names the contract gives, in any case
// for the header, and empty pairs, are served as before.
func TestWellNamedTenantStillServed(t *testing.T) {
	for _, tc := range []struct {
		target string
		header string
		want   string
	}{
		{target: "/token?tenant=acme&provider=genesys", want: "acme"},
		{target: "/token?&&tenant=acme&", want: "acme"},
		{target: "/token?%74enant=acme", want: "acme"},
		{target: "/token", header: "x-tenant-id", want: "acme"},
		{target: "/token", header: "X-TENANT-ID", want: "acme"},
		{target: "/token", want: "alpha"},
	} {
		fc := &fakeCache{}
		h := newTestHandler(t, fc, func(c *Config) { c.DefaultTenant = "alpha" })
		r := tokenRequest(http.MethodGet, tc.target)
		if tc.header != "" {
			r.Header.Set(tc.header, "acme")
		}
		decodeToken(t, serve(h, r))
		if got := fc.lastKey(t).Tenant; got != tc.want {
			t.Errorf("%s %s: tenant %q, want %q", tc.target, tc.header, got, tc.want)
		}
	}
}

// TestMisnamedNamesAreBoundedAndEscaped: the name in the message is what the
// caller sent, so it is cut short and escaped: no control character, no
// newline, no invalid UTF-8 reaches the answer or a log.
func TestMisnamedNamesAreBoundedAndEscaped(t *testing.T) {
	fc := &fakeCache{}
	logs := &logBuffer{}
	h := newTestHandler(t, fc, func(c *Config) {
		c.DefaultTenant = "alpha"
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	long := strings.Repeat("k", 10_000)
	for _, target := range []string{
		"/token?" + long + "=1",
		"/token?a%0D%0AX-Evil:%201=1",
		"/token?%FF%FE=1",
		"/token?%E2%80%AE=1", // right-to-left override
	} {
		b := wantError(t, serve(h, tokenRequest(http.MethodGet, target)), http.StatusBadRequest, "INVALID_REQUEST")
		if len(b.Message) > 200 {
			t.Errorf("%.40s: message of %d bytes", target, len(b.Message))
		}
		if strings.ContainsAny(b.Message, "\r\n\u202e") || !utf8.ValidString(b.Message) {
			t.Errorf("%.40s: message %q not escaped", target, b.Message)
		}
	}
	if strings.Contains(logs.String(), strings.Repeat("k", 100)) || strings.Contains(logs.String(), "X-Evil: 1") {
		t.Errorf("log holds the unbounded or unescaped name:\n%.500s", logs.String())
	}
}

func TestMisnamedChecksDoNotAllocate(t *testing.T) {
	h := http.Header{"Accept": {"*/*"}, "X-Tenant-Id": {"acme"}, "X-Token-Request": {"true"}, "User-Agent": {"x"}}
	allocs := testing.AllocsPerRun(100, func() {
		if parseTokenQuery("tenant=acme&provider=genesys&").hasUnknown {
			t.Fatal("unknown key")
		}
		if _, ok := misspeltTenantHeader(h); ok {
			t.Fatal("misspelt")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}

// TestWellNamedHeadersAreNotMisspelt: the names misspeltTenantHeader takes
// without looking at them are no misspellings of X-Tenant-ID.
func TestWellNamedHeadersAreNotMisspelt(t *testing.T) {
	for _, name := range wellNamedHeaders {
		if misspeltTenantName(name) {
			t.Errorf("%s is a misspelling", name)
		}
		if http.CanonicalHeaderKey(name) != name {
			t.Errorf("%s is not canonical: a request never holds it", name)
		}
	}
}
