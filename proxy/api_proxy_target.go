package proxy

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/token-sidecar/token-sidecar/cache"
)

// apiProxyPrefix is what a /proxy/ request path starts with; the rest of the
// path, escapes intact, is appended to the tenant's API base.
const apiProxyPrefix = "/proxy"

// Messages of the INVALID_REQUEST answers the API proxy gives by itself.
const (
	msgProxyPathDots      = "path refused: /proxy/ paths must not hold '.' or '..' segments, escaped or not"
	msgProxyPathMalformed = "path malformed: invalid percent-escape"
	msgProxyBodyUnread    = "the request body could not be read"
)

// proxyKey resolves the cache key of a /proxy/ request: provider genesys, the
// tenant from the X-Tenant-ID header, else the default tenant, checked
// against the allow-list. The query string is never read: it belongs to the
// API call, and a tenant parameter there is the API's business.
//
// It reuses tenant's rules for the header and the default (present but empty
// or repeated is refused, never replaced by the default) by handing it a view
// of the request without its query.
func (r *tenantRules) proxyKey(req *http.Request) (cache.Key, error) {
	noQuery := &http.Request{URL: &url.URL{Path: req.URL.Path}, Header: req.Header}
	tenant, err := r.tenant(noQuery)
	if err != nil {
		return cache.Key{}, err
	}
	if !r.isAllowed(tenant) {
		return cache.Key{}, &apiError{code: codeTenantNotAllowed, tenant: tenant, provider: defaultProvider}
	}
	return cache.Key{Provider: defaultProvider, Tenant: tenant}, nil
}

// proxyPath returns the part of a /proxy/ request's escaped path that goes to
// the API ("/api/v2/users/me" for "/proxy/api/v2/users/me"), escapes kept as
// the app sent them so that an escaped "/" (%2F) stays inside its segment.
//
// It refuses dot segments, "." and "..", also when escaped (%2E%2E) or
// hidden in a segment behind an escaped slash or backslash ("..%2Fx"): the
// API host, or a proxy in between, may resolve them and reach another path
// than the one the app named.
func proxyPath(escapedPath string) (string, error) {
	rest, ok := strings.CutPrefix(escapedPath, apiProxyPrefix)
	if !ok || !strings.HasPrefix(rest, "/") {
		// The router only sends /proxy/* here.
		return "", invalidRequest(msgProxyPathMalformed)
	}
	for seg := range strings.SplitSeq(rest, "/") {
		plain, err := url.PathUnescape(seg)
		if err != nil {
			return "", invalidRequest(msgProxyPathMalformed)
		}
		for part := range strings.FieldsFuncSeq(plain, func(r rune) bool { return r == '/' || r == '\\' }) {
			if part == "." || part == ".." {
				return "", invalidRequest(msgProxyPathDots)
			}
		}
	}
	return rest, nil
}

// errBadAPIBase is returned for a token whose APIBaseURL is not an absolute
// http(s) URL: a bug in the token source, not something the caller can fix.
var errBadAPIBase = errors.New("proxy: the token's API base URL is missing or not an absolute http(s) URL")

// apiTarget is the URL of a proxied request: the API base (whose own path, if
// any, is kept as a prefix) followed by the escaped rest of the path. The
// query is left empty for the caller to copy.
func apiTarget(base, rest string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errBadAPIBase
	}
	escaped := strings.TrimSuffix(u.EscapedPath(), "/") + rest
	plain, err := url.PathUnescape(escaped)
	if err != nil {
		return nil, errBadAPIBase
	}
	u.Path, u.RawPath = plain, escaped
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	return u, nil
}
