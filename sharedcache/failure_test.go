package sharedcache

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

// fallsBack checks that p answers a miss with its own upstream's token, as
// it would without a shared cache.
func fallsBack(t *testing.T, p *pod, key cache.Key) {
	t.Helper()
	before := p.up.calls.Load()
	tok := mustFetch(t, p, miss(key))
	if tok.AccessToken == "" || p.up.calls.Load() != before+1 {
		t.Fatalf("token %q after %d upstream calls, want a token from one call", tok.AccessToken, p.up.calls.Load()-before)
	}
}

func TestServerDownFallsBackAndTheBreakerOpens(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := newPod(t, "redis://"+addr, writeKeyFile(t, newKey(t)))
	for range 8 {
		fallsBack(t, p, key1)
	}
	if n := p.counter(t, "token_sidecar.shared_cache.fallbacks", "cause", "breaker_open"); n == 0 {
		t.Fatal("the breaker never opened")
	}
	if s := p.gauge(t, "token_sidecar.shared_cache.breaker.state"); s != 2 {
		t.Fatalf("breaker state %d, want 2 (open)", s)
	}
	if n := p.counter(t, "token_sidecar.shared_cache.lookups", "outcome", "error"); n != 8 {
		t.Fatalf("lookups{outcome=error} = %d, want 8", n)
	}
	if !strings.Contains(p.logs.String(), addr) {
		t.Fatalf("the log does not name the server %s:\n%s", addr, p.logs.String())
	}
}

func TestSlowServerCostsOneTimeoutThenFallsBack(t *testing.T) {
	// A server that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	p := newPod(t, "redis://"+ln.Addr().String(), writeKeyFile(t, newKey(t)), func(c *Config) { c.Timeout = 50 * time.Millisecond })
	for range 7 {
		fallsBack(t, p, key1)
	}
	if n := p.counter(t, "token_sidecar.shared_cache.fallbacks", "cause", "breaker_open"); n == 0 {
		t.Fatal("the breaker never opened on a server that never answers")
	}
}

func TestRefusedPasswordFallsBackAndIsNeverLogged(t *testing.T) {
	srv := redistest.Start(t, "--requirepass", "the-right-password")
	p := newPod(t, "redis://:wrong-password-xyz@"+srv.Addr(), writeKeyFile(t, newKey(t)))
	fallsBack(t, p, key1)
	fallsBack(t, p, key1)
	eventually(t, "the start-up greeting is logged", func() bool { return strings.Contains(p.logs.String(), "not reachable at start") })
	if logs := p.logs.String(); strings.Contains(logs, "wrong-password-xyz") || !strings.Contains(logs, srv.Addr()) {
		t.Fatalf("the log holds the password or lacks the server:\n%s", logs)
	}
	// With the right password, sharing works.
	keys := writeKeyFile(t, newKey(t))
	a := newPod(t, "redis://:the-right-password@"+srv.Addr(), keys)
	b := newPod(t, "redis://:the-right-password@"+srv.Addr(), keys)
	mustFetch(t, a, miss(key1))
	mustFetch(t, b, miss(key1))
	if n := b.up.calls.Load(); n != 0 {
		t.Fatalf("pod b fetched %d times, want 0", n)
	}
}

func TestFullServerFallsBack(t *testing.T) {
	srv := redistest.Start(t, "--maxmemory", "1", "--maxmemory-policy", "noeviction")
	p := newPod(t, srv.URL(), writeKeyFile(t, newKey(t)))
	fallsBack(t, p, key1) // the lease's SET is refused with OOM
	if n := p.counter(t, "token_sidecar.shared_cache.fallbacks", "cause", "error"); n != 1 {
		t.Fatalf("fallbacks{cause=error} = %d, want 1", n)
	}
}

func TestUndecryptableEntryIsIgnoredAndReplaced(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	p := newPod(t, srv.URL(), keys)
	rdb := srv.Client()
	ctx := context.Background()
	n := p.namesOf(p.ring.Load(), key1)

	for name, garbage := range map[string]string{
		"not sealed":       "garbage",
		"version only":     "\x01",
		"under a lost key": string(newPod(t, srv.URL(), writeKeyFile(t, newKey(t))).ring.Load().seal(key1, sharedEntry{token: cache.Token{AccessToken: "x", Lifetime: time.Hour, ExpiresAt: time.Now().Add(time.Hour)}}.marshal())),
		"another tenant's": string(p.ring.Load().seal(cache.Key{Provider: "genesys", Tenant: "other"}, sharedEntry{token: cache.Token{AccessToken: "stolen", Lifetime: time.Hour, ExpiresAt: time.Now().Add(time.Hour)}}.marshal())),
	} {
		t.Run(name, func(t *testing.T) {
			if err := rdb.Set(ctx, n.entries[0], garbage, time.Hour).Err(); err != nil {
				t.Fatal(err)
			}
			before := p.counter(t, "token_sidecar.shared_cache.lookups", "outcome", "undecryptable")
			fallsBack(t, p, key1)
			if got := p.counter(t, "token_sidecar.shared_cache.lookups", "outcome", "undecryptable"); got != before+1 {
				t.Fatalf("undecryptable = %d, want %d", got, before+1)
			}
			v, err := rdb.Get(ctx, n.entries[0]).Bytes()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.ring.Load().open(key1, v); err != nil {
				t.Fatal("the bad value was not replaced by a sealed token")
			}
		})
	}
}

func TestLeaseWithoutExpiryIsNotWaitedFor(t *testing.T) {
	srv := redistest.Start(t)
	p := newPod(t, srv.URL(), writeKeyFile(t, newKey(t)))
	n := p.namesOf(p.ring.Load(), key1)
	if err := srv.Client().Set(context.Background(), n.lease, "garbage", 0).Err(); err != nil {
		t.Fatal(err)
	}
	fallsBack(t, p, key1)
	if got := p.counter(t, "token_sidecar.shared_cache.fallbacks", "cause", "stuck_lease"); got != 1 {
		t.Fatalf("fallbacks{cause=stuck_lease} = %d, want 1", got)
	}
}

func TestSharingResumesWhenTheServerComesBack(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	quick := func(c *Config) { c.BreakerDelay = 200 * time.Millisecond }
	a, b := newPod(t, srv.URL(), keys, quick), newPod(t, srv.URL(), keys, quick)
	mustFetch(t, a, miss(key1))
	srv.Kill()
	for range 7 {
		fallsBack(t, a, key1)
		fallsBack(t, b, key1)
	}
	srv.Restart()
	other := cache.Key{Provider: "genesys", Tenant: "after-restart"}
	// Once the breakers let a probe through, a's fetch is shared again.
	eventually(t, "pod b adopts pod a's token", func() bool {
		mustFetch(t, a, miss(other))
		before := b.up.calls.Load()
		mustFetch(t, b, miss(other))
		return b.up.calls.Load() == before
	})
}

// A half-open breaker's probe that learns nothing of the server (the caller
// gave up first) must not close the breaker: against a dead server every
// fetch would then pay a timeout again until it reopens.
func TestAProbeCutOffByItsCallerDoesNotCloseTheBreaker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	p := newPod(t, "redis://"+addr, writeKeyFile(t, newKey(t)), func(c *Config) { c.BreakerDelay = 100 * time.Millisecond })
	for range 8 {
		fallsBack(t, p, key1)
	}
	if s := p.gauge(t, "token_sidecar.shared_cache.breaker.state"); s != 2 {
		t.Fatalf("breaker state %d, want 2 (open)", s)
	}
	time.Sleep(150 * time.Millisecond) // half-open: the next command is its probe
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, _ = p.Fetch(ctx, miss(key1))
	if s := p.gauge(t, "token_sidecar.shared_cache.breaker.state"); s == 0 {
		t.Fatal("a probe its caller cut off closed the breaker against a dead server")
	}
}
