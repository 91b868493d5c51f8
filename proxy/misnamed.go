package proxy

import (
	"net/http"
	"strconv"
	"strings"
)

// This file holds the refusal of names a token request must not use: a query
// parameter other than tenant and provider (tokenQuery.unknown), and a header that is X-Tenant-ID
// spelt another way. Either one means the caller meant something the sidecar
// would otherwise ignore, and ignoring a misnamed tenant serves the default
// tenant's token to a caller that asked for another one.

// maxQuotedName is the most bytes of a caller's name an answer quotes; the
// rest is cut and marked with "...".
const maxQuotedName = 64

// misspeltTenantHeader returns the name of the first header of h that is
// X-Tenant-ID spelt another way — with other separators or none
// (X_Tenant_ID, X-TenantID, X.Tenant.Id), without its X or ID (Tenant-ID,
// X-Tenant), or with a double n (X-Tennant-ID), in any case — and
// true; "" and false when there is none. X-Tenant-ID itself, in any case, is
// not misspelt. Some proxies (nginx by default) drop headers with an
// underscore while Go keeps them, so such a header would reach one hop and
// not the next. It does not allocate.
func misspeltTenantHeader(h http.Header) (string, bool) {
	if len(h) <= len(wellNamedHeaders) {
		// When every header has one of these names, none is misspelt: a
		// few lookups cost less than walking the map.
		known := 0
		for _, name := range wellNamedHeaders {
			if _, ok := h[name]; ok {
				known++
			}
			if known == len(h) {
				return "", false
			}
		}
	}
	for name := range h {
		if misspeltTenantName(name) {
			return name, true
		}
	}
	return "", false
}

// wellNamedHeaders are the headers a token request commonly carries, in
// canonical form, most common first; none is a misspelling of X-Tenant-ID.
var wellNamedHeaders = [...]string{headerTokenRequest, "User-Agent", "Accept", headerTenantID, "Accept-Encoding", "Traceparent"}

// misspeltTenantName reports whether name is a misspelling of X-Tenant-ID
// (and not X-Tenant-ID itself, in any case): its ASCII letters and digits,
// lower-cased, are those of a name an app is likely to send when it means
// X-Tenant-ID — the name itself with other separators, without its X or
// its ID, or with the common double n. One pass, no allocation.
func misspeltTenantName(name string) bool {
	var buf [len("xtennantid")]byte
	n := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if !isAlnum(c) {
			continue
		}
		if n == len(buf) {
			return false // longer than every misspelling
		}
		buf[n] = c
		n++
	}
	switch string(buf[:n]) {
	case "xtenantid":
		return !strings.EqualFold(name, headerTenantID)
	case "tenantid", "xtenant", "tenant", "xtennantid", "tennantid":
		return true
	}
	return false
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
