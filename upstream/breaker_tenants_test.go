package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/token-sidecar/token-sidecar/upstream/upstreamtest"
)

// TestBreakerNeedsFailuresFromDistinctTenants is issue 10 item 11's breaker
// half: four tenants whose Tenant Service answer is 500 (12 attempts with
// the default retries, in well under a second here) opened the breaker for
// the whole pod, and every cold tenant then got 503. Four tenants are not
// FailureThreshold (5): however often they fail, the breaker stays closed
// and a healthy tenant is served; a fifth failing tenant, with the rate
// still over the threshold, opens it.
func TestBreakerNeedsFailuresFromDistinctTenants(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.SetCredentials("healthy", acmeCreds)
	const bad, rounds = 4, 3
	for i := range bad + 1 {
		ts.Script(fmt.Sprintf("bad-%d", i), "genesys", repeat(upstreamtest.Step{Status: http.StatusInternalServerError}, 3*rounds)...)
	}
	c := newTenantClient(t, ts.URL()) // default breaker and retries; fast backoff
	cb := tenantBreaker(t, c, ts.URL())
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range bad {
			wg.Go(func() {
				_, err := c.GenesysCredentials(context.Background(), fmt.Sprintf("bad-%d", i))
				if e := asError(t, err, CodeTenantServiceUnavailable); errors.Is(err, ErrCircuitOpen) || e.Attempts != 3 {
					t.Errorf("round %d, bad-%d: %v after %d attempts; want its 3 attempts to reach the host", round, i, err, e.Attempts)
				}
			})
		}
		wg.Wait()
		if s := cb.State(); s != circuitbreaker.ClosedState {
			t.Fatalf("round %d: breaker %s after %d tenants failed; want closed", round, s, bad)
		}
		if _, err := c.GenesysCredentials(context.Background(), "healthy"); err != nil {
			t.Fatalf("round %d: a healthy tenant got %v", round, err)
		}
	}
	if n := ts.TotalCalls(); n != rounds*(3*bad+1) {
		t.Errorf("Tenant Service calls = %d, want %d", n, rounds*(3*bad+1))
	}
	// A fifth tenant failing makes five: the failures held back count now,
	// the rate is far above one half, the breaker opens at once.
	_, err := c.GenesysCredentials(context.Background(), fmt.Sprintf("bad-%d", bad))
	if e := asError(t, err, CodeTenantServiceUnavailable); e.Attempts != 1 {
		t.Errorf("fifth tenant: %v after %d attempts; want the breaker to open at its first", err, e.Attempts)
	}
	if s := cb.State(); s != circuitbreaker.OpenState {
		t.Fatalf("breaker %s after 5 tenants failed; want open", s)
	}
	if _, err := c.GenesysCredentials(context.Background(), "healthy"); !errors.Is(err, ErrCircuitOpen) {
		t.Errorf("healthy tenant while open: %v; want a refusal", err)
	}
}

// TestBreakerOneTenantNeverOpensIt: a single tenant failing every attempt,
// far beyond the minimum sample, is that tenant's problem.
func TestBreakerOneTenantNeverOpensIt(t *testing.T) {
	t.Parallel()
	ts := newFakeTenantService(t)
	ts.Script("acme", "genesys", repeat(s503(), 30)...)
	c := newTenantClient(t, ts.URL(), func(cfg *TenantClientConfig) {
		cfg.MaxRetries = -1
		cfg.Breaker = BreakerConfig{FailureThreshold: 2, FailureRate: 1}
	})
	for i := range 30 {
		if _, err := c.GenesysCredentials(context.Background(), "acme"); errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("call %d refused: one tenant opened the breaker", i)
		}
	}
	if s := tenantBreaker(t, c, ts.URL()).State(); s != circuitbreaker.ClosedState {
		t.Errorf("breaker %s, want closed", s)
	}
}

// TestHostBreakerNoteFailure checks the distinct-tenant bookkeeping on a
// fake clock: failures wait until minTenants tenants failed within the
// window, then count all at once, those older than the window not; the
// tenants themselves age out of the window.
func TestHostBreakerNoteFailure(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	h := &hostBreaker{minTenants: 3, window: 10 * time.Second, maxPending: 4, now: func() time.Time { return now }, failing: map[string]time.Time{}}
	step := func(d time.Duration, tenant string, want int) {
		t.Helper()
		now = now.Add(d)
		if got := h.noteFailure(tenant); got != want {
			t.Errorf("at +%v, %s: %d to record, want %d (failing %v, pending %d)", d, tenant, got, want, h.failing, len(h.pending))
		}
	}
	step(0, "a", 0)
	step(time.Second, "a", 0)
	step(time.Second, "b", 0)
	step(time.Second, "c", 4) // a, a, b held back, and this one
	step(time.Second, "a", 1) // three tenants within the window: recorded at once
	// a's, b's and c's failures age out; a alone is one tenant again.
	step(20*time.Second, "a", 0)
	step(time.Second, "b", 0)
	// At most maxPending wait: the oldest go.
	step(0, "b", 0)
	step(0, "b", 0)
	step(0, "b", 0)
	step(time.Second, "c", 5) // 4 held back (of 5) and this one
	// Held-back failures older than the window do not count.
	step(20*time.Second, "x", 0)
	step(9*time.Second, "y", 0)
	step(2*time.Second, "z", 0) // x left the window: two tenants
	step(time.Second, "w", 3)   // y, z and w; x's failure not counted
	if len(h.failing) > h.minTenants {
		t.Errorf("%d tenants kept, want at most %d", len(h.failing), h.minTenants)
	}
}
