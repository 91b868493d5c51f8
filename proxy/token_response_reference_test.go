package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// referenceTokenJSON is appendTokenJSON as it was first written. The 200
// body must stay byte for byte what it is (TestTokenJSONMatchesReference,
// FuzzTokenJSONMatchesReference).
func referenceTokenJSON(tok cache.Token, now time.Time) []byte {
	str := func(b []byte, s string) []byte {
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				q, _ := json.Marshal(s)
				return append(b, q...)
			}
		}
		return append(append(append(b, '"'), s...), '"')
	}
	typ := tok.TokenType
	if typ == "" || strings.EqualFold(typ, "bearer") {
		typ = "bearer"
	} else {
		typ = strings.ToLower(typ)
	}
	secs := max(1, int64(tok.UsableUntil().Sub(now)/time.Second))
	b := append([]byte(nil), `{"access_token":`...)
	b = str(b, tok.AccessToken)
	b = append(b, `,"token_type":`...)
	b = str(b, typ)
	b = append(b, `,"expires_in":`...)
	b = strconv.AppendInt(b, secs, 10)
	b = append(b, `,"expires_at":"`...)
	b = now.Add(time.Duration(secs)*time.Second).UTC().AppendFormat(b, time.RFC3339)
	return append(b, "\"}\n"...)
}

// tokenJSONCases are access tokens and token types that need every kind
// of treatment: none, JSON escapes, HTML characters, control characters,
// non-ASCII and invalid UTF-8.
var tokenJSONCases = []string{
	"", "tok-SECRET-abc123", "eyJhbGciOiJIUzI1NiJ9.e30.sig-_~+/=", `quote"backslash\`, "control\x01\n\t\r\x1f",
	"del\x7f", "unicode é ✓", "invalid utf8 \xff\xfe", "<html>&", `<"`, "\u2028\u2029", " spaces ", "Bearer", "BEARER",
	"MAC", "DPoP", "bearer\x00", strings.Repeat("a", 5000), strings.Repeat("\"", 3),
}

func TestTokenJSONMatchesReference(t *testing.T) {
	for _, access := range tokenJSONCases {
		for _, typ := range tokenJSONCases[:16] {
			for _, left := range []time.Duration{0, 500 * time.Millisecond, time.Second, 90*time.Minute + 999*time.Millisecond, 400 * 24 * time.Hour} {
				now := testNow.Add(123456789 * time.Nanosecond)
				tok := cache.Token{AccessToken: access, TokenType: typ, ExpiresAt: now.Add(left), Lifetime: time.Hour}
				if got, want := appendTokenJSON(nil, tok, now), referenceTokenJSON(tok, now); !bytes.Equal(got, want) {
					t.Errorf("token %q type %q, %v left:\n got %s\nwant %s", access, typ, left, got, want)
				}
			}
		}
	}
}

func FuzzTokenJSONMatchesReference(f *testing.F) {
	for i, s := range tokenJSONCases {
		f.Add(s, tokenJSONCases[i%16], int64(i)*int64(time.Hour))
	}
	f.Fuzz(func(t *testing.T, access, typ string, left int64) {
		tok := cache.Token{AccessToken: access, TokenType: typ, ExpiresAt: testNow.Add(time.Duration(left)), Lifetime: time.Hour}
		if got, want := appendTokenJSON(nil, tok, testNow), referenceTokenJSON(tok, testNow); !bytes.Equal(got, want) {
			t.Errorf("token %q type %q, %d ns left:\n got %s\nwant %s", access, typ, left, got, want)
		}
	})
}

// TestTokenAnswerIsUnchanged: the whole 200 answer of GET /token and POST
// /token/refresh — status, headers, body — for a token that needs escaping.
func TestTokenAnswerIsUnchanged(t *testing.T) {
	tok := cache.Token{AccessToken: "a<b>&\"c\\\x01é", TokenType: "DPoP", ExpiresAt: testNow.Add(time.Hour), Lifetime: time.Hour}
	h, err := NewTokenHandler(Config{Cache: &hitCache{tok: tok}, RequireRequestHeader: true, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*http.Request{tokenRequest(http.MethodGet, "/token?tenant=acme"), tokenRequest(http.MethodPost, "/token/refresh?tenant=acme")} {
		rec := serve(h, r)
		wantHeader := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"no-store"}, "Pragma": {"no-cache"}}
		if rec.Code != http.StatusOK || !equalHeader(rec.Header(), wantHeader) {
			t.Errorf("%s: status %d, header %v; want 200, %v", r.Method, rec.Code, rec.Header(), wantHeader)
		}
		const want = `{"access_token":"a\u003cb\u003e\u0026\"c\\\u0001é","token_type":"dpop","expires_in":3570,"expires_at":"2026-11-29T01:59:30Z"}` + "\n"
		if rec.Body.String() != want {
			t.Errorf("%s: body\n %s\nwant\n %s", r.Method, rec.Body, want)
		}
	}
}

func equalHeader(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || strings.Join(v, "\x00") != strings.Join(w, "\x00") {
			return false
		}
	}
	return true
}
