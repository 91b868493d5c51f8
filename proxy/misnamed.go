package proxy

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// This file holds the refusal of names a token request must not use: a query
// parameter other than tenant and provider, and a header that is X-Tenant-ID
// spelt another way. Either one means the caller meant something the sidecar
// would otherwise ignore, and ignoring a misnamed tenant serves the default
// tenant's token to a caller that asked for another one.

// maxQuotedName is the most bytes of a caller's name an answer quotes; the
// rest is cut and marked with "...".
const maxQuotedName = 64

// unknownQueryKey returns the first key of rawQuery, unescaped, that is
// neither tenant nor provider, and true; "" and false when there is none.
// Empty pairs ("&&", a trailing "&") are no keys. A key that does not unescape
// is returned as it was sent. It allocates only for an escaped key.
func unknownQueryKey(rawQuery string) (string, bool) {
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

// misspeltTenantHeader returns the name of the first header of h that is
// X-Tenant-ID spelt another way — with other separators or none
// (X_Tenant_ID, X-TenantID, X.Tenant.Id), without its X or ID (Tenant-ID,
// X-Tenant), or with a double n (X-Tennant-ID), in any case — and
// true; "" and false when there is none. X-Tenant-ID itself, in any case, is
// not misspelt. Some proxies (nginx by default) drop headers with an
// underscore while Go keeps them, so such a header would reach one hop and
// not the next. It does not allocate.
func misspeltTenantHeader(h http.Header) (string, bool) {
	for name := range h {
		if strings.EqualFold(name, headerTenantID) {
			continue
		}
		// The letters and digits of the names an app is likely to send when
		// it means X-Tenant-ID: the name itself with other separators,
		// without its X or its ID, and with the common double n.
		for _, want := range [...]string{"xtenantid", "tenantid", "xtenant", "tenant", "xtennantid", "tennantid"} {
			if lettersAndDigitsFold(name, want) {
				return name, true
			}
		}
	}
	return "", false
}

// lettersAndDigitsFold reports whether the ASCII letters and digits of s are,
// ignoring case, exactly want (lower-case letters and digits).
func lettersAndDigitsFold(s, want string) bool {
	j := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if !isAlnum(c) {
			continue
		}
		if j == len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}

// quoteName quotes a name the caller sent for an answer or a log line: cut
// to maxQuotedName bytes, then Go-quoted in ASCII, so that no control
// character, line break, invalid UTF-8 or bidirectional mark gets through.
func quoteName(s string) string {
	if len(s) <= maxQuotedName {
		return strconv.QuoteToASCII(s)
	}
	return strconv.QuoteToASCII(s[:maxQuotedName]) + "..."
}

// Messages of the misnamed-request refusals; the name follows.
const (
	msgUnknownParameter   = "unknown query parameter %s: the token API takes only tenant and provider"
	msgMisspeltTenantHead = "header %s refused: the tenant header is X-Tenant-ID, spelt with hyphens"
)
