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
	if len(s) == 0 || len(s) > maxTenantIDLen || tenantIDBytes[s[0]] != idAlnum {
		return false
	}
	for i := 1; i < len(s); i++ {
		if tenantIDBytes[s[i]] == idNone {
			return false
		}
	}
	return true
}

// Classes of the bytes of a tenant ID (tenantIDBytes).
const (
	idNone  = iota // not in a tenant ID
	idAlnum        // an ASCII letter or digit: anywhere
	idPunct        // '_', '.' or '-': not first
)

// tenantIDBytes is the class of each byte in a tenant ID: one load per byte
// rather than a chain of comparisons, on every token request.
var tenantIDBytes = func() (t [256]uint8) {
	for c := range 256 {
		switch {
		case isAlnum(byte(c)):
			t[c] = idAlnum
		case c == '_' || c == '.' || c == '-':
			t[c] = idPunct
		}
	}
	return t
}()

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
// then the provider, then the allow-list; so a malformed request gets 400
// even for a tenant that is not allowed. Nothing the caller sent reaches the
// cache unless it passed them all. The query string is read once
// (parseTokenQuery); a request that passes allocates nothing here unless
// its values are escaped.
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
	q := parseTokenQuery(req.URL.RawQuery)
	if q.hasUnknown {
		return cache.Key{}, invalidRequest(fmt.Sprintf(msgUnknownParameter, quoteName(q.unknown)))
	}
	tenant, err := r.tenant(req, q.tenant)
	if err != nil {
		return cache.Key{}, err
	}
	provider, found, err := q.provider.value()
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

// tenant returns the request's tenant: query parameter tenant (param), else
// header X-Tenant-ID, else the default tenant. A parameter or header that is
// present counts even when it is empty, and is then refused as malformed:
// falling back to the default tenant would hand an app whose tenant variable
// is unset another tenant's token. A tenant given twice (two query
// parameters, two headers) is refused too, for the same reason, and so is a
// header that is X-Tenant-ID misspelt (misspeltTenantHeader), present or not
// the right one.
func (r *tenantRules) tenant(req *http.Request, param queryParam) (string, error) {
	if name, ok := misspeltTenantHeader(req.Header); ok {
		return "", invalidRequest(fmt.Sprintf(msgMisspeltTenantHead, quoteName(name)))
	}
	tenant, found, err := param.value()
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

// errRepeated is queryParam.value's answer for a parameter that occurs more
// than once.
var errRepeated = errors.New("query parameter repeated")

// tokenQuery is what a token request's query string names, read in one pass
// by parseTokenQuery.
type tokenQuery struct {
	// unknown is the first key that is neither tenant nor provider,
	// unescaped, or as it was sent when it does not unescape; hasUnknown
	// says there is one. Empty pairs ("&&", a trailing "&") are no keys.
	unknown    string
	hasUnknown bool

	tenant, provider queryParam
}

// queryParam is one parameter of a tokenQuery. Its zero value is a
// parameter that does not occur.
type queryParam struct {
	raw string // the first occurrence's value, still escaped
	n   int    // occurrences, counted up to 2
}

// parseTokenQuery reads a raw query string as url.ParseQuery would, with
// keys and values unescaped, but without building the map: it keeps the
// first unknown key and, of tenant and provider, the first value and
// whether there is more than one. It allocates only for an escaped key.
func parseTokenQuery(rawQuery string) tokenQuery {
	var q tokenQuery
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		var p *queryParam
		switch k {
		case queryTenant:
			p = &q.tenant
		case queryProvider:
			p = &q.provider
		default:
			if plain, err := url.QueryUnescape(k); err == nil {
				switch plain {
				case queryTenant:
					p = &q.tenant
				case queryProvider:
					p = &q.provider
				}
				k = plain
			}
		}
		if p == nil {
			if !q.hasUnknown {
				q.unknown, q.hasUnknown = k, true
			}
			continue
		}
		if p.n == 0 {
			p.raw = v
		}
		p.n = min(p.n+1, 2)
	}
	return q
}

// value returns the parameter's value, unescaped, as url.Values.Get would,
// and whether it occurs. Its error is errRepeated when it occurs more than
// once, and another when its first value is not validly escaped.
func (p queryParam) value() (value string, found bool, err error) {
	if p.n == 0 {
		return "", false, nil
	}
	if value, err = url.QueryUnescape(p.raw); err != nil {
		return "", true, err
	}
	if p.n > 1 {
		return "", true, errRepeated
	}
	return value, true, nil
}
