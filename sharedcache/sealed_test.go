package sharedcache

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

func TestTheServerHoldsNoTokenOrTenantInClear(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	p := newPod(t, srv.URL(), keys, func(c *Config) { c.MinRefreshInterval = time.Minute })
	var secrets []string
	for _, tenant := range []string{"acme-corp", "globex-42"} {
		key := cache.Key{Provider: "genesys", Tenant: tenant}
		tok := mustFetch(t, p, miss(key))
		forced := mustFetch(t, p, cache.FetchRequest{Key: key, Reason: cache.ReasonForced, Current: tok, Refused: tok.AccessToken})
		secrets = append(secrets, tenant, tok.AccessToken, forced.AccessToken, "api.example.test")
	}
	dump := srv.Dump(context.Background(), srv.Client())
	if len(dump) < 4 { // two entries, two forced markers
		t.Fatalf("only %d keys on the server: %q", len(dump), dump)
	}
	for _, kv := range dump {
		if !strings.HasPrefix(kv, DefaultPrefix) {
			t.Errorf("a key outside the prefix: %q", kv)
		}
		for _, s := range secrets {
			if strings.Contains(kv, s) {
				t.Errorf("the server holds %q in clear: %q", s, kv)
			}
		}
	}
}

func TestEntriesExpireOnTheServerAtTheTokensMargin(t *testing.T) {
	srv := redistest.Start(t)
	p := newPod(t, srv.URL(), writeKeyFile(t, newKey(t)))
	tok := mustFetch(t, p, miss(key1))
	n := p.namesOf(p.ring.Load(), key1)
	ttl, err := srv.Client().PTTL(context.Background(), n.entries[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	// The server's clock and ours are the same machine's; allow for the
	// round trips in between.
	want := time.Until(tok.UsableUntil())
	if ttl <= 0 || ttl > want+time.Second || ttl < want-5*time.Second {
		t.Fatalf("entry TTL %v, want about %v (the token's margin)", ttl, want)
	}
}
