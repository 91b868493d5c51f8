package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/token-sidecar/token-sidecar/cache"
)

// maxTenantIDLen is the longest valid tenant ID, in bytes.
const maxTenantIDLen = 128

// defaultProvider is the provider of a request without a provider parameter.
const defaultProvider = "genesys"

// Where a token request names its tenant and provider.
const (
	queryTenant    = "tenant"
	queryProvider  = "provider"
	headerTenantID = "X-Tenant-Id" // canonical form of X-Tenant-ID
)

// ValidTenantID reports whether s is a well-formed tenant ID, that is whether
// it matches ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$: one to 128 ASCII letters,
// digits, '_', '.' or '-', starting with a letter or a digit. Such an ID is
// safe in a URL path segment, a log line and a metric label, and cannot be a
// dot-segment ("." or ".."). cmd validates -default-tenant and
// -allowed-tenants with it.
func ValidTenantID(s string) bool {
	if len(s) == 0 || len(s) > maxTenantIDLen || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// Messages of the INVALID_REQUEST answers the proxy gives by itself. They never
// echo what the caller sent: a malformed value may hold control characters or
// be very long.
const (
	msgTenantMissing   = "tenant missing: pass the tenant query parameter or the X-Tenant-ID header (no default tenant is configured)"
	msgTenantMalformed = "tenant malformed: a tenant ID is 1 to 128 ASCII letters, digits, '_', '.' or '-', starting with a letter or a digit"
	msgTenantTwice     = "tenant given more than once"
	msgProviderTwice   = "provider given more than once"
	msgQueryMalformed  = "query string malformed"
	msgBodyRefused     = "the token API takes no request body"
)

// tenantRules resolve and check the (provider, tenant) key of a token request.
// They are immutable after newTenantRules, so safe for concurrent use.
type tenantRules struct {
	defaultTenant string
	allowed       map[string]struct{} // nil: every tenant is allowed
	providers     []string
	// msgProviderUnknown lists the known providers; built once because the
	// answer never echoes the provider the caller sent.
	msgProviderUnknown string
}

func newTenantRules(defaultTenant string, allowed, providers []string) (*tenantRules, error) {
	r := &tenantRules{defaultTenant: defaultTenant}
	if defaultTenant != "" && !ValidTenantID(defaultTenant) {
		return nil, fmt.Errorf("proxy: default tenant %q is not a valid tenant ID", defaultTenant)
	}
	if len(allowed) > 0 {
		r.allowed = make(map[string]struct{}, len(allowed))
		for _, t := range allowed {
			if !ValidTenantID(t) {
				return nil, fmt.Errorf("proxy: allowed tenant %q is not a valid tenant ID", t)
			}
			r.allowed[t] = struct{}{}
		}
		if defaultTenant != "" && !r.isAllowed(defaultTenant) {
			return nil, fmt.Errorf("proxy: default tenant %q is not in the allowed tenants", defaultTenant)
		}
	}
	if providers == nil {
		providers = []string{defaultProvider}
	}
	if len(providers) == 0 {
		return nil, errors.New("proxy: no provider configured")
	}
	for _, p := range providers {
		if p == "" {
			return nil, errors.New("proxy: empty provider name")
		}
	}
	r.providers = slices.Clone(providers)
	r.msgProviderUnknown = "provider unknown: known providers are " + strings.Join(r.providers, ", ")
	return r, nil
}

func (r *tenantRules) isAllowed(tenant string) bool {
	if r.allowed == nil {
		return true
	}
	_, ok := r.allowed[tenant]
	return ok
}

// key resolves the cache key of a token request (GET /token, POST
// /token/refresh) and checks it. The order of the checks is part of the
// behaviour: no body, then the query's form (no ';', no parameter but tenant
// and provider), then the tenant's form (no misspelt tenant header either),
// then the provider, then the allow-list; so a malformed request gets 400 even for a tenant that is not
// allowed. Nothing the caller sent reaches the cache unless it passed them all.
//
// The X-Token-Request check runs before, as middleware.
func (r *tenantRules) key(req *http.Request) (cache.Key, error) {
	if hasBody(req) {
		return cache.Key{}, invalidRequest(msgBodyRefused)
	}
	if strings.IndexByte(req.URL.RawQuery, ';') >= 0 {
		// url.ParseQuery drops pairs with a semicolon; a proxy in front of
		// us may split on it instead. Rather than guess which tenant was
		// meant, refuse.
		return cache.Key{}, invalidRequest(msgQueryMalformed)
	}
	if k, ok := unknownQueryKey(req.URL.RawQuery); ok {
		return cache.Key{}, invalidRequest(fmt.Sprintf(msgUnknownParameter, quoteName(k)))
	}
	tenant, err := r.tenant(req)
	if err != nil {
		return cache.Key{}, err
	}
	provider, found, err := lookupQuery(req.URL.RawQuery, queryProvider)
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

// tenant returns the request's tenant: query parameter tenant, else header
// X-Tenant-ID, else the default tenant. A parameter or header that is present
// counts even when it is empty, and is then refused as malformed: falling back
// to the default tenant would hand an app whose tenant variable is unset
// another tenant's token. A tenant given twice (two query parameters, two
// headers) is refused too, for the same reason, and so is a header that is
// X-Tenant-ID misspelt (misspeltTenantHeader), present or not the right one.
func (r *tenantRules) tenant(req *http.Request) (string, error) {
	if name, ok := misspeltTenantHeader(req.Header); ok {
		return "", invalidRequest(fmt.Sprintf(msgMisspeltTenantHead, quoteName(name)))
	}
	tenant, found, err := lookupQuery(req.URL.RawQuery, queryTenant)
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
	if !ValidTenantID(tenant) {
		return "", invalidRequest(msgTenantMalformed)
	}
	return tenant, nil
}

// hasBody reports whether the request comes with a body: a positive
// Content-Length, or a body of unknown length (chunked).
func hasBody(req *http.Request) bool {
	return req.ContentLength != 0 || len(req.TransferEncoding) > 0
}

// errRepeated is lookupQuery's answer for a key that occurs more than once.
var errRepeated = errors.New("query parameter repeated")

// lookupQuery finds key in a raw query string as url.Values.Get would, with
// the key and value unescaped, but without building the map (the cached-token
// path allocates nothing here when nothing is escaped). It reports whether
// the key occurs; errRepeated when it occurs more than once, and an error when
// its value is not validly escaped. Pairs that are not the key are skipped
// unparsed.
func lookupQuery(rawQuery, key string) (value string, found bool, err error) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(pair, "=")
		k, kerr := url.QueryUnescape(k)
		if kerr != nil || k != key {
			continue // a malformed key is not ours either
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
