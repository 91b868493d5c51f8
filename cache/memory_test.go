package cache

import (
	"context"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// TestEntriesKeepNoCallerMemory: what a cached tenant keeps is its own. The
// state's tenant string is a copy, not the caller's (in the sidecar a
// substring of the request line, which it would keep alive whole), and
// tokens with the same TokenType and APIBaseURL share one copy of each
// instead of every decoded answer's own.
func TestEntriesKeepNoCallerMemory(t *testing.T) {
	clk := newClock()
	c, err := New(Config{Source: SourceFunc(func(_ context.Context, req FetchRequest) (Token, error) {
		// Each answer's strings are its own, as when decoded from JSON.
		return Token{AccessToken: req.Key.Tenant, TokenType: strings.Clone("bearer"),
			APIBaseURL: strings.Clone("https://api.mypurecloud.ie"),
			ExpiresAt:  clk.Now().Add(24 * time.Hour), Lifetime: 24 * time.Hour}, nil
	}), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	line := "GET /token?tenant=acme HTTP/1.1"
	callerKey := Key{Provider: "genesys", Tenant: line[len("GET /token?tenant="):][:len("acme")]}
	other := Key{Provider: "genesys", Tenant: "globex"}
	for _, k := range []Key{callerKey, other} {
		if _, err := c.Get(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}

	c.mu.Lock()
	sa, sb := c.states[callerKey], c.states[other]
	c.mu.Unlock()
	if sa == nil || sb == nil {
		t.Fatal("no state for the tenants")
	}
	if sa.key.Tenant != "acme" || unsafe.StringData(sa.key.Tenant) == unsafe.StringData(callerKey.Tenant) {
		t.Errorf("the state's tenant %q shares the caller's string", sa.key.Tenant)
	}
	ta, tb := sa.view.Load().tok, sb.view.Load().tok
	if ta.TokenType != "bearer" || unsafe.StringData(ta.TokenType) != unsafe.StringData(tb.TokenType) {
		t.Errorf("TokenType %q / %q: two copies", ta.TokenType, tb.TokenType)
	}
	if ta.APIBaseURL != "https://api.mypurecloud.ie" || unsafe.StringData(ta.APIBaseURL) != unsafe.StringData(tb.APIBaseURL) {
		t.Errorf("APIBaseURL %q / %q: two copies", ta.APIBaseURL, tb.APIBaseURL)
	}
}
