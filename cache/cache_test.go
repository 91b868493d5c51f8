package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable fake clock with timers: AfterFunc's functions run
// when Advance passes their time.
type clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	at            time.Time
	f             func()
	stopped, done bool
}

// AfterFunc is Config.AfterFunc on the fake clock.
func (c *clock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now.Add(d), f: f}
	if d <= 0 {
		t.done = true
		go f()
	} else {
		c.timers = append(c.timers, t)
	}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped && !t.done
		t.stopped = true
		return was
	}
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped || t.done:
		case !t.at.After(c.now):
			t.done = true
			due = append(due, t.f)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

// source is a fake Source that mints numbered tokens of a fixed lifetime, or
// returns err when set. Every call is counted.
type source struct {
	clock    *clock
	lifetime time.Duration
	calls    atomic.Int64
	mu       sync.Mutex
	err      error
	gate     chan struct{} // when non-nil, each fetch waits for it to close
	lastCtx  context.Context
}

func (s *source) Fetch(ctx context.Context, req FetchRequest) (Token, error) {
	key := req.Key
	n := s.calls.Add(1)
	s.mu.Lock()
	gate, err := s.gate, s.err
	s.lastCtx = ctx
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if err != nil {
		return Token{}, err
	}
	now := s.clock.Now()
	return Token{
		AccessToken: fmt.Sprintf("%s/%s#%d", key.Provider, key.Tenant, n),
		TokenType:   "bearer",
		ExpiresAt:   now.Add(s.lifetime),
		Lifetime:    s.lifetime,
	}, nil
}

func (s *source) setErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// recorder is an Observer that counts events.
type recorder struct {
	mu     sync.Mutex
	counts map[string]int
}

func (r *recorder) add(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts == nil {
		r.counts = map[string]int{}
	}
	r.counts[name]++
}

func (r *recorder) get(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[name]
}

func (r *recorder) Hit(_ Key, _ time.Duration, stale bool) {
	r.add("hit")
	if stale {
		r.add("stale")
	}
}
func (r *recorder) Miss(Key)                 { r.add("miss") }
func (r *recorder) NegativeHit(Key)          { r.add("negative") }
func (r *recorder) Collapsed(Key)            { r.add("collapsed") }
func (r *recorder) RefreshAhead(Key)         { r.add("refresh_ahead") }
func (r *recorder) RefreshTimer(Key)         { r.add("refresh_timer") }
func (r *recorder) ForcedRefresh(Key)        { r.add("forced") }
func (r *recorder) ForcedRefreshLimited(Key) { r.add("forced_limited") }
func (r *recorder) Evicted(Key)              { r.add("evicted") }

var errNotFound = errors.New("credentials not found")

func newTestCache(t *testing.T, lifetime time.Duration, mod func(*Config)) (*Cache, *source, *clock, *recorder) {
	t.Helper()
	clk := newClock()
	src := &source{clock: clk, lifetime: lifetime}
	rec := &recorder{}
	cfg := Config{
		Source:        src,
		Now:           clk.Now,
		RefreshJitter: -1,
		Observer:      rec,
		NegativeTTL:   5 * time.Second,
		IsNegative:    func(err error) bool { return errors.Is(err, errNotFound) },
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, src, clk, rec
}

var tenantA = Key{Provider: "genesys", Tenant: "a"}

func mustGet(t *testing.T, c *Cache, key Key) Token {
	t.Helper()
	tok, err := c.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%v): %v", key, err)
	}
	return tok
}

func TestMargin(t *testing.T) {
	for _, tc := range []struct{ lifetime, want time.Duration }{
		{24 * time.Hour, 30 * time.Second},
		{300 * time.Second, 30 * time.Second},
		{100 * time.Second, 10 * time.Second},
		{4 * time.Second, 400 * time.Millisecond},
		{0, 0},
	} {
		if got := Margin(tc.lifetime); got != tc.want {
			t.Errorf("Margin(%v) = %v, want %v", tc.lifetime, got, tc.want)
		}
	}
}

func TestSequentialHitsFetchOnce(t *testing.T) {
	c, src, _, rec := newTestCache(t, time.Hour, nil)
	first := mustGet(t, c, tenantA)
	for range 100 {
		if got := mustGet(t, c, tenantA); got.AccessToken != first.AccessToken {
			t.Fatalf("token changed: %q → %q", first.AccessToken, got.AccessToken)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("source called %d times, want 1", n)
	}
	if rec.get("hit") != 100 || rec.get("miss") != 1 {
		t.Fatalf("hits=%d misses=%d", rec.get("hit"), rec.get("miss"))
	}
}

func TestConcurrentMissesCollapse(t *testing.T) {
	c, src, _, rec := newTestCache(t, time.Hour, nil)
	src.gate = make(chan struct{})
	const callers = 1000
	var wg sync.WaitGroup
	tokens := make([]string, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			tok, err := c.Get(context.Background(), tenantA)
			tokens[i], errs[i] = tok.AccessToken, err
		})
	}
	// Let the callers pile up on the flight before it completes.
	for src.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || tokens[i] != tokens[0] {
			t.Fatalf("caller %d: %q, %v; want %q", i, tokens[i], errs[i], tokens[0])
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("source called %d times, want 1", n)
	}
	if got := rec.get("collapsed") + rec.get("hit"); got != callers-1 {
		t.Fatalf("collapsed+hit = %d, want %d", got, callers-1)
	}
}

// A caller that missed just before another flight stored its token must not
// start a second fetch when its own flight begins after that one ended.
func TestLateMissUsesTheTokenStoredMeanwhile(t *testing.T) {
	c, src, _, _ := newTestCache(t, time.Hour, nil)
	first := mustGet(t, c, tenantA)
	// What a caller does after its look-up missed: join or start a flight.
	tok, err := c.miss(context.Background(), tenantA, true)
	if err != nil || tok.AccessToken != first.AccessToken {
		t.Fatalf("late miss = %q, %v; want the stored %q", tok.AccessToken, err, first.AccessToken)
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("source called %d times, want 1", n)
	}
	// A forced refresh still fetches.
	if _, err := c.Refresh(context.Background(), tenantA, ""); err != nil || src.calls.Load() != 2 {
		t.Fatalf("forced flight: %v, %d calls; want a fetch", err, src.calls.Load())
	}
}

func TestMaxConcurrentFetches(t *testing.T) {
	var running, most atomic.Int64
	release := make(chan struct{})
	c, _, _, _ := newTestCache(t, time.Hour, func(cfg *Config) {
		cfg.MaxConcurrentFetches = 2
		cfg.Source = SourceFunc(func(_ context.Context, req FetchRequest) (Token, error) {
			key := req.Key
			n := running.Add(1)
			defer running.Add(-1)
			for {
				m := most.Load()
				if n <= m || most.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			return Token{AccessToken: key.Tenant, ExpiresAt: newClock().Now().Add(time.Hour), Lifetime: time.Hour}, nil
		})
	})
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() { c.Get(context.Background(), Key{"genesys", fmt.Sprint("t", i)}) })
	}
	waitFor(t, "two fetches to run", func() bool { return running.Load() == 2 })
	time.Sleep(50 * time.Millisecond) // room for a third to start, were it allowed
	if n := running.Load(); n != 2 {
		t.Fatalf("%d fetches run at once, want 2", n)
	}
	close(release)
	wg.Wait()
	if most.Load() != 2 {
		t.Fatalf("at most %d fetches ran at once, want 2", most.Load())
	}
}

// A fetch that waited FetchTimeout for a slot has stopped: every caller gets
// a 503 (TENANT_SERVICE_UNAVAILABLE), not the TIMEOUT of a caller whose own
// wait ran out while the fetch goes on.
func TestSlotStarvedFetchIsUnavailable(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	c, _, _, _ := newTestCache(t, time.Hour, func(cfg *Config) {
		cfg.MaxConcurrentFetches = 1
		cfg.FetchTimeout = 50 * time.Millisecond
		cfg.Source = SourceFunc(func(_ context.Context, req FetchRequest) (Token, error) {
			key := req.Key
			if key.Tenant == "holder" {
				<-block // holds the only slot past every timeout
			}
			return Token{AccessToken: "t", ExpiresAt: newClock().Now().Add(time.Hour), Lifetime: time.Hour}, nil
		})
	})
	go c.Get(context.Background(), Key{"genesys", "holder"})
	time.Sleep(10 * time.Millisecond)
	_, err := c.Get(context.Background(), Key{"genesys", "waiter"})
	var unavailable *UnavailableError
	if !errors.As(err, &unavailable) || unavailable.ErrorCode() != "TENANT_SERVICE_UNAVAILABLE" {
		t.Fatalf("Get = %v, want an UnavailableError while every slot is busy", err)
	}
}

func TestDistinctKeysFetchSeparately(t *testing.T) {
	c, src, _, _ := newTestCache(t, time.Hour, nil)
	a := mustGet(t, c, Key{"genesys", "a"})
	b := mustGet(t, c, Key{"genesys", "b"})
	w := mustGet(t, c, Key{"whatsapp", "a"})
	if a.AccessToken == b.AccessToken || a.AccessToken == w.AccessToken {
		t.Fatalf("keys share a token: %q %q %q", a.AccessToken, b.AccessToken, w.AccessToken)
	}
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("source called %d times, want 3", n)
	}
}

func TestNeverServedInsideMargin(t *testing.T) {
	// 100 s lifetime: margin 10 s, so usable until 90 s.
	c, src, clk, _ := newTestCache(t, 100*time.Second, func(cfg *Config) { cfg.RefreshAt = 0.95 })
	first := mustGet(t, c, tenantA)
	clk.Advance(90*time.Second - time.Nanosecond)
	if got := mustGet(t, c, tenantA); got.AccessToken != first.AccessToken {
		t.Fatalf("token replaced before its margin")
	}
	clk.Advance(time.Nanosecond)
	if got := mustGet(t, c, tenantA); got.AccessToken == first.AccessToken {
		t.Fatalf("token served inside its safety margin")
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2", n)
	}
}

// waitFor polls cond, for background work that has no other signal.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRefreshAheadServesCurrentTokenMeanwhile(t *testing.T) {
	c, src, clk, rec := newTestCache(t, 100*time.Second, nil)
	first := mustGet(t, c, tenantA)
	clk.Advance(80*time.Second - time.Nanosecond)
	mustGet(t, c, tenantA)
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("refresh started before 80%% of the lifetime")
	}
	src.mu.Lock()
	src.gate = make(chan struct{})
	src.mu.Unlock()
	clk.Advance(time.Nanosecond)
	for range 50 {
		if got := mustGet(t, c, tenantA); got.AccessToken != first.AccessToken {
			t.Fatalf("current token not served while refreshing")
		}
	}
	close(src.gate)
	waitFor(t, "the refreshed token", func() bool { return mustGet(t, c, tenantA).AccessToken != first.AccessToken })
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2 (one refresh)", n)
	}
	if rec.get("refresh_ahead") != 1 {
		t.Fatalf("refresh_ahead = %d, want 1", rec.get("refresh_ahead"))
	}
}

func TestRefreshJitterMovesRefreshEarlier(t *testing.T) {
	c, src, clk, _ := newTestCache(t, 100*time.Second, func(cfg *Config) {
		cfg.RefreshJitter = 0.1
		cfg.Rand = func() float64 { return 0.5 } // refresh at 0.8 - 0.05 = 75 %
	})
	mustGet(t, c, tenantA)
	clk.Advance(75*time.Second - time.Nanosecond)
	mustGet(t, c, tenantA)
	if src.calls.Load() != 1 {
		t.Fatal("refreshed before the jittered point")
	}
	clk.Advance(time.Nanosecond)
	mustGet(t, c, tenantA)
	waitFor(t, "a refresh at the jittered point", func() bool { return src.calls.Load() == 2 })
}

func TestFailedRefreshServesUntilMarginThenFails(t *testing.T) {
	c, src, clk, rec := newTestCache(t, 100*time.Second, nil)
	first := mustGet(t, c, tenantA)
	unavailable := errors.New("tenant service unavailable")
	src.setErr(unavailable)

	clk.Advance(80 * time.Second)
	mustGet(t, c, tenantA) // starts the refresh, which fails
	waitFor(t, "the failed refresh", func() bool { return src.calls.Load() == 2 && c.refreshIdle(tenantA) })

	// Inside the retry delay no new refresh starts; the old token is served.
	clk.Advance(time.Second)
	if got := mustGet(t, c, tenantA); got.AccessToken != first.AccessToken {
		t.Fatal("current token not served after a failed refresh")
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("refresh retried inside the retry delay: %d calls", n)
	}
	// After the retry delay the next request tries again.
	clk.Advance(DefaultRefreshRetryDelay)
	mustGet(t, c, tenantA)
	waitFor(t, "the second refresh", func() bool { return src.calls.Load() == 3 && c.refreshIdle(tenantA) })

	// At the margin (90 s) the token is gone and the caller gets the error.
	clk.Advance(90*time.Second - clk.Now().Sub(first.ExpiresAt.Add(-100*time.Second)))
	if _, err := c.Get(context.Background(), tenantA); !errors.Is(err, unavailable) {
		t.Fatalf("Get inside the margin = %v, want the upstream error", err)
	}
	if rec.get("stale") == 0 {
		t.Fatal("stale serves not reported")
	}
}

// refreshIdle reports whether no refresh-ahead runs for key.
func (c *Cache) refreshIdle(key Key) bool {
	c.mu.Lock()
	s := c.states[key]
	c.mu.Unlock()
	if s == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.refreshing
}

func TestNegativeEntries(t *testing.T) {
	c, src, clk, rec := newTestCache(t, time.Hour, nil)
	src.setErr(fmt.Errorf("wrapped: %w", errNotFound))
	for range 10 {
		if _, err := c.Get(context.Background(), tenantA); !errors.Is(err, errNotFound) {
			t.Fatalf("Get = %v, want not found", err)
		}
	}
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("source called %d times inside the negative TTL, want 1", n)
	}
	if rec.get("negative") != 9 {
		t.Fatalf("negative hits = %d, want 9", rec.get("negative"))
	}
	src.setErr(nil)
	clk.Advance(5 * time.Second)
	if _, err := c.Get(context.Background(), tenantA); err != nil {
		t.Fatalf("Get after the negative TTL: %v", err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2", n)
	}
}

func TestTransientErrorsAreNotCached(t *testing.T) {
	c, src, _, _ := newTestCache(t, time.Hour, nil)
	src.setErr(errors.New("503"))
	for range 3 {
		if _, err := c.Get(context.Background(), tenantA); err == nil {
			t.Fatal("want an error")
		}
	}
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("source called %d times, want 3 (errors not cached)", n)
	}
}

func TestNegativeErrorDoesNotReplaceWorkingToken(t *testing.T) {
	c, src, clk, _ := newTestCache(t, 100*time.Second, nil)
	first := mustGet(t, c, tenantA)
	src.setErr(errNotFound)
	clk.Advance(85 * time.Second)
	mustGet(t, c, tenantA)
	waitFor(t, "the failed refresh", func() bool { return src.calls.Load() == 2 && c.refreshIdle(tenantA) })
	if got := mustGet(t, c, tenantA); got.AccessToken != first.AccessToken {
		t.Fatal("a failed refresh took away a working token")
	}
}

func TestForcedRefreshMinInterval(t *testing.T) {
	c, src, clk, rec := newTestCache(t, time.Hour, func(cfg *Config) { cfg.MinRefreshInterval = 5 * time.Second })
	first := mustGet(t, c, tenantA)

	// A token obtained the normal way can be force-refreshed at once.
	forced, err := c.Refresh(context.Background(), tenantA, "")
	if err != nil || forced.AccessToken == first.AccessToken {
		t.Fatalf("Refresh = %q, %v; want a new token", forced.AccessToken, err)
	}
	if got := mustGet(t, c, tenantA); got.AccessToken != forced.AccessToken {
		t.Fatal("Get does not serve the force-refreshed token")
	}
	// A second forced refresh inside the interval gets the same token.
	clk.Advance(4 * time.Second)
	again, err := c.Refresh(context.Background(), tenantA, "")
	if err != nil || again.AccessToken != forced.AccessToken {
		t.Fatalf("second Refresh = %q, %v; want %q", again.AccessToken, err, forced.AccessToken)
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2", n)
	}
	// After the interval a forced refresh fetches again.
	clk.Advance(time.Second)
	third, err := c.Refresh(context.Background(), tenantA, "")
	if err != nil || third.AccessToken == forced.AccessToken {
		t.Fatalf("third Refresh = %q, %v; want a new token", third.AccessToken, err)
	}
	if rec.get("forced") != 2 || rec.get("forced_limited") != 1 {
		t.Fatalf("forced=%d limited=%d", rec.get("forced"), rec.get("forced_limited"))
	}
}

func TestConcurrentForcedRefreshesCollapse(t *testing.T) {
	c, src, _, _ := newTestCache(t, time.Hour, func(cfg *Config) { cfg.MinRefreshInterval = 5 * time.Second })
	mustGet(t, c, tenantA)
	src.mu.Lock()
	src.gate = make(chan struct{})
	src.mu.Unlock()
	var wg sync.WaitGroup
	tokens := make([]string, 20)
	for i := range tokens {
		wg.Go(func() {
			tok, _ := c.Refresh(context.Background(), tenantA, "")
			tokens[i] = tok.AccessToken
		})
	}
	waitFor(t, "the forced fetch", func() bool { return src.calls.Load() == 2 })
	time.Sleep(20 * time.Millisecond)
	close(src.gate)
	wg.Wait()
	for _, tok := range tokens {
		if tok != tokens[0] {
			t.Fatalf("forced refreshes got different tokens: %q vs %q", tok, tokens[0])
		}
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2", n)
	}
}

func TestCallerGivingUpDoesNotCancelSharedFetch(t *testing.T) {
	c, src, _, _ := newTestCache(t, time.Hour, nil)
	src.gate = make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Get(ctx, tenantA); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get = %v, want deadline exceeded", err)
	}
	src.mu.Lock()
	fetchCtx := src.lastCtx
	src.mu.Unlock()
	if fetchCtx.Err() != nil {
		t.Fatal("the caller's deadline cancelled the shared fetch")
	}
	close(src.gate)
	waitFor(t, "the fetch to be cached", func() bool { return c.tokens.Get(tenantA) != nil })
	mustGet(t, c, tenantA)
	if n := src.calls.Load(); n != 1 {
		t.Fatalf("source called %d times, want 1 (result of the abandoned fetch cached)", n)
	}
}

func TestFetchTimeoutBoundsSharedFetch(t *testing.T) {
	c, _, _, _ := newTestCache(t, time.Hour, func(cfg *Config) {
		cfg.FetchTimeout = 20 * time.Millisecond
		cfg.Source = SourceFunc(func(ctx context.Context, _ FetchRequest) (Token, error) {
			<-ctx.Done()
			return Token{}, ctx.Err()
		})
	})
	_, err := c.Get(context.Background(), tenantA)
	var unavailable *UnavailableError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &unavailable) {
		t.Fatalf("Get = %v, want the fetch timeout as an UnavailableError", err)
	}
}

func TestCapacityEvictsLeastRecentlyUsed(t *testing.T) {
	c, src, _, rec := newTestCache(t, time.Hour, func(cfg *Config) { cfg.Capacity = 2 })
	a, b, d := Key{"genesys", "a"}, Key{"genesys", "b"}, Key{"genesys", "d"}
	mustGet(t, c, a)
	mustGet(t, c, b)
	mustGet(t, c, a) // a is now more recent than b
	mustGet(t, c, d) // evicts b
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	mustGet(t, c, a)
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("a was evicted: %d calls", n)
	}
	mustGet(t, c, b)
	if n := src.calls.Load(); n != 4 {
		t.Fatalf("b was not evicted: %d calls", n)
	}
	// ttlcache runs eviction callbacks on their own goroutines.
	waitFor(t, "the eviction to be reported", func() bool { return rec.get("evicted") >= 1 })
}

func TestTokenInsideItsMarginOnArrivalIsRefused(t *testing.T) {
	c, _, _, _ := newTestCache(t, time.Hour, func(cfg *Config) {
		cfg.Source = SourceFunc(func(context.Context, FetchRequest) (Token, error) {
			// 10 s lifetime (margin 1 s), of which the fetch used 9.5 s.
			now := newClock().Now()
			return Token{AccessToken: "t", ExpiresAt: now.Add(500 * time.Millisecond), Lifetime: 10 * time.Second}, nil
		})
	})
	_, err := c.Get(context.Background(), tenantA)
	var expired *ExpiredTokenError
	if !errors.As(err, &expired) || expired.ErrorCode() != "UPSTREAM_INVALID_RESPONSE" {
		t.Fatalf("Get = %v, want an ExpiredTokenError (UPSTREAM_INVALID_RESPONSE)", err)
	}
	if c.Len() != 0 {
		t.Fatal("a token inside its margin was cached (ttlcache would keep it for ever)")
	}
}

// POST /token/refresh means the app was refused with the cached token: when
// the forced exchange fails terminally, that token must not be served again.
func TestTerminalForcedRefreshFailureDropsTheRefusedToken(t *testing.T) {
	c, src, _, _ := newTestCache(t, time.Hour, func(cfg *Config) { cfg.MinRefreshInterval = 5 * time.Second })
	refused := mustGet(t, c, tenantA)
	src.setErr(errNotFound)
	if _, err := c.Refresh(context.Background(), tenantA, refused.AccessToken); !errors.Is(err, errNotFound) {
		t.Fatalf("Refresh = %v, want the upstream error", err)
	}
	if _, err := c.Get(context.Background(), tenantA); !errors.Is(err, errNotFound) {
		t.Fatalf("Get after a terminal forced failure = %v, want the cached error", err)
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2 (get, failed refresh; then the negative entry)", n)
	}
}

// A transient failure keeps the refused token served until its margin: the
// 401 may have been spurious, and an outage must not fail every request.
func TestTransientForcedRefreshFailureKeepsTheToken(t *testing.T) {
	c, src, clk, _ := newTestCache(t, time.Hour, func(cfg *Config) { cfg.MinRefreshInterval = 5 * time.Second })
	refused := mustGet(t, c, tenantA)
	unavailable := errors.New("login unavailable")
	src.setErr(unavailable)
	if _, err := c.Refresh(context.Background(), tenantA, refused.AccessToken); !errors.Is(err, unavailable) {
		t.Fatalf("Refresh = %v, want the upstream error", err)
	}
	if got := mustGet(t, c, tenantA); got.AccessToken != refused.AccessToken {
		t.Fatal("a transient forced failure dropped the token")
	}
	clk.Advance(time.Hour - 30*time.Second)
	if _, err := c.Get(context.Background(), tenantA); !errors.Is(err, unavailable) {
		t.Fatalf("Get at the margin = %v, want the upstream error", err)
	}
}

func TestSourcePanicIsAnError(t *testing.T) {
	c, _, _, _ := newTestCache(t, time.Hour, func(cfg *Config) {
		cfg.Source = SourceFunc(func(context.Context, FetchRequest) (Token, error) { panic("boom") })
	})
	if _, err := c.Get(context.Background(), tenantA); err == nil {
		t.Fatal("want an error from a panicking source")
	}
}

func TestConfigValidation(t *testing.T) {
	src := SourceFunc(func(context.Context, FetchRequest) (Token, error) { return Token{}, nil })
	for name, cfg := range map[string]Config{
		"no source":         {},
		"negative capacity": {Source: src, Capacity: -1},
		"refresh-at 1":      {Source: src, RefreshAt: 1},
		"refresh-at -0.5":   {Source: src, RefreshAt: -0.5},
		"jitter too large":  {Source: src, RefreshAt: 0.5, RefreshJitter: 0.6},
		"negative ttl":      {Source: src, NegativeTTL: -time.Second},
		"negative fetches":  {Source: src, MaxConcurrentFetches: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

func TestCloseRightAfterNewDoesNotLeak(t *testing.T) {
	// goleak in TestMain fails the package if the janitor outlives Close.
	for range 20 {
		c, err := New(Config{Source: SourceFunc(func(context.Context, FetchRequest) (Token, error) { return Token{}, nil })})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// Cached is Get's hit path without the wait: a hit (fresh or stale, with the
// refresh ahead) has Get's effects; a miss, an expired token and a cached
// error return false and count nothing, nor fetch.
func TestCached(t *testing.T) {
	c, src, clk, rec := newTestCache(t, 100*time.Second, nil)
	if _, ok := c.Cached(context.Background(), tenantA); ok {
		t.Fatal("Cached on an empty cache = true")
	}
	if rec.get("miss") != 0 || src.calls.Load() != 0 {
		t.Fatalf("Cached on a miss counted %d misses, fetched %d times; want none", rec.get("miss"), src.calls.Load())
	}
	first := mustGet(t, c, tenantA)
	tok, ok := c.Cached(context.Background(), tenantA)
	if !ok || tok.AccessToken != first.AccessToken {
		t.Fatalf("Cached = %q, %v; want %q, true", tok.AccessToken, ok, first.AccessToken)
	}
	if rec.get("hit") != 1 || rec.get("stale") != 0 {
		t.Fatalf("hits=%d stale=%d, want 1, 0", rec.get("hit"), rec.get("stale"))
	}

	// Past the refresh point: still served, reported stale, one refresh.
	clk.Advance(80 * time.Second)
	if tok, ok := c.Cached(context.Background(), tenantA); !ok || tok.AccessToken != first.AccessToken {
		t.Fatalf("Cached past the refresh point = %q, %v; want the current token", tok.AccessToken, ok)
	}
	if rec.get("stale") != 1 || rec.get("refresh_ahead") != 1 {
		t.Fatalf("stale=%d refresh_ahead=%d, want 1, 1", rec.get("stale"), rec.get("refresh_ahead"))
	}
	waitFor(t, "the refreshed token", func() bool {
		tok, ok := c.Cached(context.Background(), tenantA)
		return ok && tok.AccessToken != first.AccessToken
	})

	// Inside the margin: nothing usable, nothing counted.
	hits := rec.get("hit")
	clk.Advance(95 * time.Second)
	if _, ok := c.Cached(context.Background(), tenantA); ok {
		t.Fatal("Cached served a token inside its safety margin")
	}
	if rec.get("hit") != hits || rec.get("miss") != 1 {
		t.Fatalf("hits=%d misses=%d after an unusable token, want %d, 1", rec.get("hit"), rec.get("miss"), hits)
	}

	// A cached error is Get's to answer.
	other := Key{Provider: "genesys", Tenant: "b"}
	src.setErr(errNotFound)
	if _, err := c.Get(context.Background(), other); !errors.Is(err, errNotFound) {
		t.Fatalf("Get = %v, want not found", err)
	}
	if _, ok := c.Cached(context.Background(), other); ok {
		t.Fatal("Cached = true for a cached error")
	}
	if rec.get("negative") != 0 {
		t.Fatalf("Cached counted %d negative hits, want 0", rec.get("negative"))
	}
}
