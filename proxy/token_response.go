package proxy

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// appendTokenJSON appends the 200 body of the token API to b:
//
//	{"access_token":"…","token_type":"bearer","expires_in":N,"expires_at":"RFC 3339 UTC"}
//
// expires_in is the whole seconds from now to tok.UsableUntil() (the token's
// expiry minus the safety margin), rounded down and at least 1. expires_at is
// now plus expires_in seconds, in UTC, to the second (RFC 3339 drops the
// fraction, so it is never later than now + expires_in): the two always agree,
// and neither promises more than the cache will serve.
func appendTokenJSON(b []byte, tok cache.Token, now time.Time) []byte {
	secs := expiresIn(tok.UsableUntil(), now)
	b = append(b, `{"access_token":`...)
	b = appendJSONString(b, tok.AccessToken)
	b = append(b, `,"token_type":`...)
	b = appendJSONString(b, tokenType(tok.TokenType))
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, secs, 10)
	b = append(b, `,"expires_at":"`...)
	b = now.Add(time.Duration(secs)*time.Second).UTC().AppendFormat(b, time.RFC3339)
	return append(b, "\"}\n"...)
}

// expiresIn is the expires_in of a token usable until the given instant:
// whole seconds from now, rounded down, at least 1 (the contract's floor; the
// cache does not serve a token past its usable instant, so 1 is only reached
// in the last second).
func expiresIn(usableUntil, now time.Time) int64 {
	return max(1, int64(usableUntil.Sub(now)/time.Second))
}

// tokenType is the token_type answered: the token's own type in lower case,
// "bearer" when it has none. Genesys answers "bearer"; the common cases cost
// no allocation.
func tokenType(t string) string {
	if t == "" || t == "bearer" || strings.EqualFold(t, "bearer") {
		return "bearer"
	}
	return strings.ToLower(t)
}

// appendJSONString appends s as a JSON string. Access tokens are printable
// ASCII in practice and are appended as they are; anything else — a byte
// below 0x20 or above 0x7e, '"' or '\\' — sends the whole string through
// encoding/json, which escapes it correctly (and, once there, HTML
// characters too).
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !jsonPlain[s[i]] {
			q, _ := json.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// jsonPlain[c] reports whether appendJSONString appends byte c as it is:
// one load per byte of the token rather than four comparisons.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c <= 0x7e; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()
