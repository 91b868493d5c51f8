package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/token-sidecar/token-sidecar/cache"
)

// referenceKey is tenantRules.key as it was written first: each check its
// own pass over the query string and the headers. The single-pass key must
// answer every request exactly as it does (TestKeyMatchesReference,
// FuzzKeyMatchesReference).
func referenceKey(r *tenantRules, req *http.Request) (cache.Key, error) {
	if hasBody(req) {
		return cache.Key{}, invalidRequest(msgBodyRefused)
	}
	if strings.IndexByte(req.URL.RawQuery, ';') >= 0 {
		return cache.Key{}, invalidRequest(msgQueryMalformed)
	}
	if k, ok := referenceUnknownQueryKey(req.URL.RawQuery); ok {
		return cache.Key{}, invalidRequest(fmt.Sprintf(msgUnknownParameter, quoteName(k)))
	}
	tenant, err := referenceTenant(r, req)
	if err != nil {
		return cache.Key{}, err
	}
	provider, found, err := referenceLookupQuery(req.URL.RawQuery, queryProvider)
	switch {
	case errors.Is(err, errRepeated):
		return cache.Key{}, invalidRequest(msgProviderTwice)
	case err != nil:
		return cache.Key{}, invalidRequest(msgQueryMalformed)
	case !found:
		provider = defaultProvider
	}
	if !slices.Contains(r.providers, provider) {
		return cache.Key{}, &apiError{code: codeInvalidRequest, message: r.msgProviderUnknown, tenant: tenant}
	}
	if !r.isAllowed(tenant) {
		return cache.Key{}, &apiError{code: codeTenantNotAllowed, tenant: tenant, provider: provider}
	}
	return cache.Key{Provider: provider, Tenant: tenant}, nil
}

func referenceTenant(r *tenantRules, req *http.Request) (string, error) {
	for name := range req.Header {
		if misspeltTenantName(name) {
			return "", invalidRequest(fmt.Sprintf(msgMisspeltTenantHead, quoteName(name)))
		}
	}
	tenant, found, err := referenceLookupQuery(req.URL.RawQuery, queryTenant)
	switch {
	case errors.Is(err, errRepeated):
		return "", invalidRequest(msgTenantTwice)
	case err != nil:
		return "", invalidRequest(msgQueryMalformed)
	case !found:
		switch values := req.Header[headerTenantID]; len(values) {
		case 0:
			if r.defaultTenant == "" {
				return "", invalidRequest(msgTenantMissing)
			}
			return r.defaultTenant, nil
		case 1:
			tenant = values[0]
		default:
			return "", invalidRequest(msgTenantTwice)
		}
	}
	if !tenantIDPattern.MatchString(tenant) {
		return "", invalidRequest(msgTenantMalformed)
	}
	return tenant, nil
}

func referenceLookupQuery(rawQuery, key string) (value string, found bool, err error) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(pair, "=")
		k, kerr := url.QueryUnescape(k)
		if kerr != nil || k != key {
			continue
		}
		if found {
			return "", true, errRepeated
		}
		found = true
		if value, err = url.QueryUnescape(v); err != nil {
			return "", true, err
		}
	}
	return value, found, nil
}

func referenceUnknownQueryKey(rawQuery string) (string, bool) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" {
			continue
		}
		k, _, _ := strings.Cut(pair, "=")
		if k == queryTenant || k == queryProvider {
			continue
		}
		if plain, err := url.QueryUnescape(k); err == nil {
			if plain == queryTenant || plain == queryProvider {
				continue
			}
			k = plain
		}
		return k, true
	}
	return "", false
}

// keyOutcome is what a request's key check answers, comparable.
type keyOutcome struct {
	key                             cache.Key
	code, message, tenant, provider string
}

func outcome(k cache.Key, err error) keyOutcome {
	if err == nil {
		return keyOutcome{key: k}
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		return keyOutcome{code: "not an apiError: " + err.Error()}
	}
	msg := ae.message
	if before, _, ok := strings.Cut(msgMisspeltTenantHead, "%s"); ok && strings.HasPrefix(msg, before) {
		// Which of several misspelt headers is named follows the header
		// map's order, in both.
		msg = msgMisspeltTenantHead
	}
	return keyOutcome{key: k, code: ae.code, message: msg, tenant: ae.tenant, provider: ae.provider}
}

// keyRuleSets are the configurations the key checks are compared under.
func keyRuleSets(t testing.TB) []*tenantRules {
	var sets []*tenantRules
	for _, c := range []struct {
		def                string
		allowed, providers []string
	}{
		{"", nil, nil},
		{"acme", nil, nil},
		{"acme", []string{"acme", "beta"}, []string{"genesys", "other"}},
	} {
		r, err := newTenantRules(c.def, c.allowed, c.providers)
		if err != nil {
			t.Fatal(err)
		}
		sets = append(sets, r)
	}
	return sets
}

// headerSets are header names (each with one value, "acme" unless it is
// X-Token-Request) the key checks are compared with.
var headerSets = [][]string{
	nil,
	{"X-Token-Request"},
	{"X-Token-Request", "User-Agent", "Accept"},
	{"X-Token-Request", "X-Tenant-Id"},
	{"X-Token-Request", "X-Tenant-Id", "X-Tenant-Id"},
	{"X-Token-Request", "X_tenant_id"},
	{"X-Token-Request", "User-Agent", "Accept", "Accept-Encoding", "Traceparent", "X-Tenantid"},
	{"X-Token-Request", "User-Agent", "Accept", "Accept-Encoding", "Traceparent", "Tracestate", "X-Request-Id"},
	{"Tenant", "X-Tenant-Id"},
	{"X-Token-Request", "X-Tenant"},
	{"X-Tenant"},
	{"x-tenant-id"},
	{"X-TENANT-ID"},
}

func keyRequest(rawQuery string, headers []string) *http.Request {
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/token", RawQuery: rawQuery}, Header: http.Header{}}
	for _, name := range headers {
		v := "acme"
		if name == headerTokenRequest {
			v = "true"
		}
		req.Header[name] = append(req.Header[name], v)
	}
	return req
}

var keyQueries = []string{
	"", "tenant=acme", "tenant=beta", "tenant=zeta", "tenant=acme&provider=genesys", "provider=other&tenant=beta",
	"provider=nope&tenant=acme", "provider=", "provider", "tenant", "tenant=", "tenant=a%20b", "tenant=a+b",
	"tenant=ac%6de", "%74enant=acme", "%74enant=acme&tenant=acme", "tenant=a&tenant=a", "tenant=%zz", "tenant=%zz&tenant=a",
	"tenant=a&tenant=%zz", "provider=%zz", "provider=genesys&provider=genesys", "provider=%zz&tenant=%zz",
	"tenant=a;b", ";", "a=1", "a=1&tenant=acme", "tenant=acme&a=1", "%zz=1", "%zz=1&tenant=acme", "x=%zz&tenant=acme",
	"=x", "&&tenant=acme&&", "&", "tenant=a=b", "+tenant=acme", "tenant+=acme", "Tenant=acme", "tenants=acme",
	"tenant=" + strings.Repeat("a", 129), "tenant=.acme", "tenant=acme&provider=other&x=" + strings.Repeat("y", 100),
	strings.Repeat("k", 100) + "=1", "tenant=a%2Fb", "provider=gen%65sys&tenant=acme", "tenant=acme&provider=genesys&tenant=acme",
}

func TestKeyMatchesReference(t *testing.T) {
	for _, r := range keyRuleSets(t) {
		for _, headers := range headerSets {
			for _, q := range keyQueries {
				got := outcome(r.key(keyRequest(q, headers)))
				want := outcome(referenceKey(r, keyRequest(q, headers)))
				if got != want {
					t.Errorf("default %q, query %q, headers %q:\n got %+v\nwant %+v", r.defaultTenant, q, headers, got, want)
				}
			}
		}
	}
	body := keyRequest("tenant=acme;x", nil)
	body.ContentLength = 1
	r := keyRuleSets(t)[0]
	if got, want := outcome(r.key(body)), outcome(referenceKey(r, body)); got != want {
		t.Errorf("with a body: got %+v, want %+v", got, want)
	}
}

func FuzzKeyMatchesReference(f *testing.F) {
	for i, q := range keyQueries {
		f.Add(q, strings.Join(headerSets[i%len(headerSets)], ","))
	}
	rules := keyRuleSets(f)
	f.Fuzz(func(t *testing.T, rawQuery, headerNames string) {
		var headers []string
		if headerNames != "" {
			headers = strings.Split(headerNames, ",")
		}
		for _, r := range rules {
			got := outcome(r.key(keyRequest(rawQuery, headers)))
			want := outcome(referenceKey(r, keyRequest(rawQuery, headers)))
			if got != want {
				t.Errorf("default %q, query %q, headers %q:\n got %+v\nwant %+v", r.defaultTenant, rawQuery, headers, got, want)
			}
		}
	})
}
