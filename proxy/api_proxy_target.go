package proxy

import (
	"errors"
	"iter"
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
	msgProxyPathDots      = "path refused: /proxy/ paths must not hold '.' or '..' segments, escaped (also twice), behind ';' or between backslashes"
	msgProxyPathEmpty     = "path refused: /proxy/ paths must not hold empty segments (//), escaped or not"
	msgProxyPathMalformed = "path malformed: invalid percent-escape"
	msgProxyBodyUnread    = "the request body could not be read"
)

// proxyKey resolves the cache key of a /proxy/ request: provider genesys, the
// tenant from the X-Tenant-ID header, else the default tenant, checked
// against the allow-list. The query string is never read: it belongs to the
// API call, and a tenant parameter there is the API's business.
//
// It reuses tenant's rules for the header and the default (present but empty
// or repeated is refused, never replaced by the default) by handing it no
// query parameter.
func (r *tenantRules) proxyKey(req *http.Request) (cache.Key, error) {
	tenant, err := r.tenant(req, queryParam{})
	if err != nil {
		return cache.Key{}, err
	}
	if !r.isAllowed(tenant) {
		return cache.Key{}, &apiError{code: codeTenantNotAllowed, tenant: tenant, provider: defaultProvider}
	}
	return cache.Key{Provider: defaultProvider, Tenant: tenant}, nil
}

// maxUnescapeRounds bounds how many times a segment is unescaped to see what
// a gateway that decodes again would see ("%25252e" is "." after three).
// A segment still changing after that many is refused.
const maxUnescapeRounds = 8

// proxyPath returns the part of a /proxy/ request's escaped path that goes to
// the API ("/api/v2/users/me" for "/proxy/api/v2/users/me"), escapes kept as
// the app sent them so that an escaped "/" (%2F) stays inside its segment.
//
// It refuses what a gateway or the API host in between may read as another
// path than the one the app named, before any upstream is called:
//   - an empty segment ("/proxy//host/x" is "//host/x", a scheme-relative
//     URL to many gateways; "a//b" is "a/b" to those that merge slashes); a
//     trailing slash is kept, it makes no segment to misread;
//   - a dot segment, "." or "..", in any form a gateway may normalise: escaped
//     (%2e%2E), escaped more than once (%252e), followed by path parameters
//     as Tomcat-style servers strip them ("..;x", ".;"), or hidden in a
//     segment behind an escaped slash or a backslash ("..%2Fx", "..%5Cx",
//     "..\x") as Node and Windows servers split on both.
//
// Each segment is judged as the most-decoding reader would see it: unescaped
// until it no longer changes, then split on '/' and '\', each part cut at
// its first ';'.
func proxyPath(escapedPath string) (string, error) {
	rest, ok := strings.CutPrefix(escapedPath, apiProxyPrefix)
	if !ok || !strings.HasPrefix(rest, "/") {
		// The router only sends /proxy/* here.
		return "", invalidRequest(msgProxyPathMalformed)
	}
	segs := strings.Split(rest[1:], "/")
	for i, seg := range segs {
		plain, err := url.PathUnescape(seg)
		if err != nil {
			return "", invalidRequest(msgProxyPathMalformed)
		}
		for round := 1; strings.IndexByte(plain, '%') >= 0; round++ {
			again, err := url.PathUnescape(plain)
			if err != nil || again == plain {
				break // a literal '%', not an escape
			}
			if round == maxUnescapeRounds {
				return "", invalidRequest(msgProxyPathMalformed)
			}
			plain = again
		}
		last := i == len(segs)-1
		for part, final := range pathParts(plain) {
			name, _, _ := strings.Cut(part, ";")
			switch {
			case part == "" && last && final:
				// A trailing slash: no segment to misread.
			case name == "":
				// Also ";x": empty once its parameters are stripped.
				return "", invalidRequest(msgProxyPathEmpty)
			case name == "." || name == "..":
				return "", invalidRequest(msgProxyPathDots)
			}
		}
	}
	return rest, nil
}

// pathParts yields the parts of a decoded segment between '/' and '\',
// empty ones included, each with whether it is the segment's last.
func pathParts(plain string) iter.Seq2[string, bool] {
	return func(yield func(string, bool) bool) {
		for {
			j := strings.IndexAny(plain, `/\`)
			if j < 0 {
				yield(plain, true)
				return
			}
			if !yield(plain[:j], false) {
				return
			}
			plain = plain[j+1:]
		}
	}
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
