package proxy

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

func TestAppendTokenJSONEscapes(t *testing.T) {
	for _, access := range []string{
		"eyJhbGciOiJIUzI1NiJ9.e30.sig-_~+/=",
		`quote"backslash\`,
		"control\x01\n\t",
		"unicode é ✓",
		"invalid utf8 \xff",
		"<html>&",
	} {
		tok := cache.Token{AccessToken: access, TokenType: "Bearer", ExpiresAt: testNow.Add(time.Hour), Lifetime: time.Hour}
		out := appendTokenJSON(nil, tok, testNow)
		var b tokenBody
		if err := json.Unmarshal(out, &b); err != nil {
			t.Errorf("token %q: invalid JSON %s: %v", access, out, err)
			continue
		}
		want, _ := json.Marshal(access)
		var wantAccess string
		_ = json.Unmarshal(want, &wantAccess)
		if b.AccessToken != wantAccess || b.TokenType != "bearer" || b.ExpiresIn != 3570 {
			t.Errorf("token %q answered as %+v", access, b)
		}
	}
}

func TestAppendTokenJSONDoesNotAllocate(t *testing.T) {
	tok := testToken()
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() { buf = appendTokenJSON(buf[:0], tok, testNow) })
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}
