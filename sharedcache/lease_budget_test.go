package sharedcache

import (
	"context"
	"testing"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache/redistest"
)

// slowUp answers after delay, or fails after delay.
type slowUp struct {
	delay time.Duration
	fail  bool
}

func (u slowUp) Fetch(ctx context.Context, req cache.FetchRequest) (cache.Token, error) {
	select {
	case <-time.After(u.delay):
	case <-ctx.Done():
		return cache.Token{}, ctx.Err()
	}
	if u.fail {
		return cache.Token{}, errUpstream
	}
	return cache.Token{AccessToken: "tok", ExpiresAt: time.Now().Add(time.Hour), Lifetime: time.Hour}, nil
}

// A holder whose fetch fails slowly must not eat the budget of the pod that
// takes over: it stops waiting while its own fetch still fits (InnerBudget)
// and fetches, as it would without a shared cache.
func TestATakerOverKeepsTheBudgetOfItsOwnFetch(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	a := newPod(t, srv.URL(), keys, func(c *Config) { c.Inner = slowUp{delay: 800 * time.Millisecond, fail: true} })
	b := newPod(t, srv.URL(), keys, func(c *Config) {
		c.Inner = slowUp{delay: 300 * time.Millisecond}
		c.InnerBudget = 400 * time.Millisecond
	})
	go a.Fetch(context.Background(), miss(key1))
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err := b.Fetch(ctx, miss(key1))
	t.Logf("pod b: err=%v after %v", err, time.Since(start))
	// Without the shared cache: slowUp{300ms} under a 1 s context succeeds.
	if err != nil {
		t.Errorf("pod b failed; without the shared cache it would have succeeded in 300ms")
	}
}

// A live holder stuck on its upstream keeps renewing its lease; a waiter
// gives up waiting while its own fetch still fits, and fetches itself.
func TestAWaiterFetchesItselfWhenALiveHolderIsStuck(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	a := newPod(t, srv.URL(), keys, func(c *Config) { c.Inner = slowUp{delay: time.Hour} })
	b := newPod(t, srv.URL(), keys, func(c *Config) {
		c.Inner = slowUp{delay: 50 * time.Millisecond}
		c.InnerBudget = 400 * time.Millisecond
	})
	actx, acancel := context.WithCancel(context.Background())
	defer acancel()
	go a.Fetch(actx, miss(key1))
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := b.Fetch(ctx, miss(key1))
	if err != nil {
		t.Errorf("pod b: %v (without shared cache: a token in 50ms)", err)
	}
}

// A lease with a TTL no sidecar sets is garbage, like one without expiry:
// nobody waits for it.
func TestALeaseLongerThanAnySidecarSetsIsNotWaitedFor(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	b := newPod(t, srv.URL(), keys)
	n := b.namesOf(b.ring.Load(), key1)
	c := srv.Client()
	if err := c.Set(context.Background(), n.lease, "garbage", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := b.Fetch(ctx, miss(key1))
	if err != nil {
		t.Errorf("pod b: %v; want a fallback as for a lease without expiry", err)
	}
}

// With InnerBudget set as cmd sets it, a waiter whose budget still holds
// adopts the holder's token: it does not fetch on its own.
func TestAWaiterWithinItsBudgetAdoptsTheHoldersToken(t *testing.T) {
	srv := redistest.Start(t)
	keys := writeKeyFile(t, newKey(t))
	const budget = time.Minute
	a := newPod(t, srv.URL(), keys, func(c *Config) { c.Inner = slowUp{delay: 300 * time.Millisecond}; c.InnerBudget = budget })
	b := newPod(t, srv.URL(), keys, func(c *Config) { c.InnerBudget = budget })
	got := make(chan cache.Token, 1)
	go func() {
		tok, _ := a.Fetch(context.Background(), miss(key1))
		got <- tok
	}()
	time.Sleep(50 * time.Millisecond) // a holds the lease
	ctx, cancel := context.WithTimeout(context.Background(), budget+10*time.Second)
	defer cancel()
	tok, err := b.Fetch(ctx, miss(key1))
	if err != nil {
		t.Fatal(err)
	}
	if n := b.up.calls.Load(); n != 0 {
		t.Fatalf("the waiter fetched %d times on its own, within its budget", n)
	}
	if held := <-got; tok.AccessToken != held.AccessToken {
		t.Fatalf("the waiter got %q, the holder fetched %q", tok.AccessToken, held.AccessToken)
	}
}
