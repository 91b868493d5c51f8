package sharedcache

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

func TestMissAdoptsTheTokenAnotherPodFetched(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	a, b := newPod(t, srv.URL(), keys), newPod(t, srv.URL(), keys)

	fetched := mustFetch(t, a, miss(key1))
	got := mustFetch(t, b, miss(key1))
	if !same(got, fetched) {
		t.Fatalf("pod b got %+v, want pod a's %+v", got, fetched)
	}
	if n := b.up.calls.Load(); n != 0 {
		t.Fatalf("pod b called its upstreams %d times, want 0", n)
	}
	if n := b.counter(t, "token_sidecar.shared_cache.adoptions", "reason", "miss"); n != 1 {
		t.Fatalf("adoptions{reason=miss} = %d, want 1", n)
	}
	if n := b.counter(t, "token_sidecar.shared_cache.lookups", "outcome", "hit"); n != 1 {
		t.Fatalf("lookups{outcome=hit} = %d, want 1", n)
	}
	if n := a.counter(t, "token_sidecar.shared_cache.lookups", "outcome", "miss"); n != 1 {
		t.Fatalf("pod a lookups{outcome=miss} = %d, want 1", n)
	}
	other := cache.Key{Provider: "genesys", Tenant: "tenant-b"}
	if tok := mustFetch(t, b, miss(other)); tok.AccessToken == fetched.AccessToken {
		t.Fatal("another tenant got tenant-a's token")
	}
}

func TestConcurrentMissesAcrossPodsMakeOneFetch(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	gate := make(chan struct{})
	var pods []*pod
	for range 4 {
		p := newPod(t, srv.URL(), keys)
		p.up.gate = gate
		pods = append(pods, p)
	}
	const perPod = 10
	toks := make(chan cache.Token, len(pods)*perPod)
	var wg sync.WaitGroup
	for _, p := range pods {
		for range perPod {
			wg.Go(func() { toks <- mustFetch(t, p, miss(key1)) })
		}
	}
	// Let every fetch reach the lease before the holder's exchange answers.
	eventually(t, "one upstream fetch started", func() bool {
		var n int64
		for _, p := range pods {
			n += p.up.calls.Load()
		}
		return n >= 1
	})
	time.Sleep(50 * time.Millisecond)
	close(gate)
	wg.Wait()
	close(toks)
	var first cache.Token
	for tok := range toks {
		if first.AccessToken == "" {
			first = tok
		}
		if !same(tok, first) {
			t.Fatalf("two tokens served: %q and %q", first.AccessToken, tok.AccessToken)
		}
	}
	var calls, waited, acquired int64
	for _, p := range pods {
		calls += p.up.calls.Load()
		waited += p.counter(t, "token_sidecar.shared_cache.leases", "outcome", "waited")
		acquired += p.counter(t, "token_sidecar.shared_cache.leases", "outcome", "acquired")
	}
	if calls != 1 {
		for i, p := range pods {
			t.Logf("pod %d: calls %d, fallbacks %d, log:\n%s", i, p.up.calls.Load(), p.counter(t, "token_sidecar.shared_cache.fallbacks", "", ""), p.logs.String())
		}
		t.Fatalf("%d upstream fetches for %d concurrent misses on %d pods, want 1", calls, len(pods)*perPod, len(pods))
	}
	if acquired != 1 || waited == 0 {
		t.Fatalf("leases acquired=%d waited=%d, want 1 and some", acquired, waited)
	}
}

func TestRefreshAheadAdoptsANewerSharedToken(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	a, b := newPod(t, srv.URL(), keys), newPod(t, srv.URL(), keys)
	t1 := mustFetch(t, a, miss(key1))
	if got := mustFetch(t, b, miss(key1)); !same(got, t1) {
		t.Fatal("pod b did not adopt the first token")
	}

	// Pod a reaches its refresh point first: the shared token is the one it
	// holds, so it fetches a newer one and shares it.
	t2 := mustFetch(t, a, cache.FetchRequest{Key: key1, Reason: cache.ReasonAhead, Current: t1})
	if same(t2, t1) || a.up.calls.Load() != 2 {
		t.Fatalf("pod a's refresh ahead did not fetch: %d calls", a.up.calls.Load())
	}
	// Pod b, at its own refresh point, adopts it.
	if got := mustFetch(t, b, cache.FetchRequest{Key: key1, Reason: cache.ReasonAhead, Current: t1}); !same(got, t2) {
		t.Fatalf("pod b refreshed to %q, want pod a's %q", got.AccessToken, t2.AccessToken)
	}
	if n := b.up.calls.Load(); n != 0 {
		t.Fatalf("pod b called its upstreams %d times, want 0", n)
	}
	if n := b.counter(t, "token_sidecar.shared_cache.adoptions", "reason", "ahead"); n != 1 {
		t.Fatalf("adoptions{reason=ahead} = %d, want 1", n)
	}
	// Nothing newer than what b now holds: b fetches.
	if got := mustFetch(t, b, cache.FetchRequest{Key: key1, Reason: cache.ReasonAhead, Current: t2}); same(got, t2) {
		t.Fatal("a refresh ahead answered the token it was to replace")
	}
	if n := b.up.calls.Load(); n != 1 {
		t.Fatalf("pod b called its upstreams %d times, want 1", n)
	}
}

func TestForcedRefreshOnTwoPodsMakesOneExchange(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	interval := func(c *Config) { c.MinRefreshInterval = time.Minute }
	a, b, c := newPod(t, srv.URL(), keys, interval), newPod(t, srv.URL(), keys, interval), newPod(t, srv.URL(), keys, interval)
	t1 := mustFetch(t, a, miss(key1))
	forced := func(refused cache.Token) cache.FetchRequest {
		return cache.FetchRequest{Key: key1, Reason: cache.ReasonForced, Current: refused, Refused: refused.AccessToken}
	}

	t2 := mustFetch(t, a, forced(t1))
	if same(t2, t1) {
		t.Fatal("a forced refresh answered the refused token")
	}
	// Pod b's app was refused with the old token too: b adopts a's new one.
	if got := mustFetch(t, b, forced(t1)); !same(got, t2) {
		t.Fatalf("pod b got %q, want %q", got.AccessToken, t2.AccessToken)
	}
	// Pod c's app is refused with the new one, inside the interval: c gets
	// the token of the forced exchange that started the interval, and no
	// exchange runs.
	if got := mustFetch(t, c, forced(t2)); !same(got, t2) {
		t.Fatalf("inside the interval pod c got %q, want %q", got.AccessToken, t2.AccessToken)
	}
	if a.up.calls.Load() != 2 || b.up.calls.Load() != 0 || c.up.calls.Load() != 0 {
		t.Fatalf("upstream calls a=%d b=%d c=%d, want 2, 0, 0", a.up.calls.Load(), b.up.calls.Load(), c.up.calls.Load())
	}
	if n := b.counter(t, "token_sidecar.shared_cache.adoptions", "reason", "forced"); n != 1 {
		t.Fatalf("adoptions{reason=forced} = %d, want 1", n)
	}
}

func TestForcedRefreshInsideTheFleetIntervalAfterAFailedExchangeIsLimited(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	interval := func(c *Config) { c.MinRefreshInterval = time.Minute }
	a, b := newPod(t, srv.URL(), keys, interval), newPod(t, srv.URL(), keys, interval)
	t1 := mustFetch(t, a, miss(key1))
	req := cache.FetchRequest{Key: key1, Reason: cache.ReasonForced, Current: t1, Refused: t1.AccessToken}

	a.up.fail(errUpstream)
	if _, err := a.Fetch(context.Background(), req); !errors.Is(err, errUpstream) {
		t.Fatalf("pod a: %v, want the upstream's error", err)
	}
	_, err := b.Fetch(context.Background(), req)
	var limited *RefreshLimitedError
	if !errors.As(err, &limited) {
		t.Fatalf("pod b: %v, want a RefreshLimitedError", err)
	}
	if limited.ErrorCode() != "OAUTH_EXCHANGE_FAILED" || limited.RetryAfter() <= 0 || limited.RetryAfter() > time.Minute {
		t.Fatalf("code %s, retry after %v", limited.ErrorCode(), limited.RetryAfter())
	}
	if n := b.up.calls.Load(); n != 0 {
		t.Fatalf("pod b exchanged %d times inside the interval, want 0", n)
	}
}

func TestDeadLeaseHolderIsTakenOverWhenItsLeaseRunsOut(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	p := newPod(t, srv.URL(), keys, func(c *Config) { c.Lease = 700 * time.Millisecond })
	// A sidecar took the lease and died: nobody renews or releases it.
	n := p.namesOf(p.ring.Load(), key1)
	if err := srv.Client().Set(context.Background(), n.lease, "dead-owner", 700*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	tok := mustFetch(t, p, miss(key1))
	if tok.AccessToken == "" || p.up.calls.Load() != 1 {
		t.Fatalf("token %q after %d calls", tok.AccessToken, p.up.calls.Load())
	}
	if got := p.counter(t, "token_sidecar.shared_cache.leases", "outcome", "taken_over"); got != 1 {
		t.Fatalf("leases{outcome=taken_over} = %d, want 1", got)
	}
}

func TestALiveHolderKeepsItsLeaseBeyondTheLeaseTime(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	lease := func(c *Config) { c.Lease = 600 * time.Millisecond }
	holder, waiter := newPod(t, srv.URL(), keys, lease), newPod(t, srv.URL(), keys, lease)
	holder.up.gate = make(chan struct{})
	holder.up.started = make(chan struct{}, 1)
	res := make(chan cache.Token, 2)
	go func() { res <- mustFetch(t, holder, miss(key1)) }()
	<-holder.up.started
	go func() { res <- mustFetch(t, waiter, miss(key1)) }()
	// Three lease times: a lease that were not renewed would have run out.
	time.Sleep(1800 * time.Millisecond)
	close(holder.up.gate)
	a, b := <-res, <-res
	if !same(a, b) {
		t.Fatalf("two tokens: %q, %q", a.AccessToken, b.AccessToken)
	}
	if n := waiter.up.calls.Load(); n != 0 {
		t.Fatalf("the waiter fetched %d times while the holder was alive, want 0", n)
	}
}

func TestHolderFailureLetsAWaiterTakeOver(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	holder, waiter := newPod(t, srv.URL(), keys), newPod(t, srv.URL(), keys)
	holder.up.gate = make(chan struct{})
	holder.up.started = make(chan struct{}, 1)
	holder.up.fail(errUpstream)
	herr := make(chan error, 1)
	go func() { _, err := holder.Fetch(context.Background(), miss(key1)); herr <- err }()
	<-holder.up.started
	wtok := make(chan cache.Token, 1)
	go func() { wtok <- mustFetch(t, waiter, miss(key1)) }()
	eventually(t, "the waiter waits", func() bool {
		return waiter.counter(t, "token_sidecar.shared_cache.leases", "outcome", "waited") == 1
	})
	close(holder.up.gate)
	if err := <-herr; !errors.Is(err, errUpstream) {
		t.Fatalf("holder: %v", err)
	}
	if tok := <-wtok; tok.AccessToken == "" {
		t.Fatal("no token")
	}
	if n := waiter.counter(t, "token_sidecar.shared_cache.leases", "outcome", "taken_over"); n != 1 {
		t.Fatalf("taken_over = %d, want 1", n)
	}
}
