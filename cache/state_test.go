package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scripted is a Source whose answer per call is decided by a function of
// the request and the call's number (from 1), with every request recorded.
type scripted struct {
	clock    *clock
	lifetime time.Duration
	answer   func(req FetchRequest, n int64) error // nil: a fresh token
	calls    atomic.Int64
	mu       sync.Mutex
	reqs     []FetchRequest
}

func (s *scripted) Fetch(ctx context.Context, req FetchRequest) (Token, error) {
	n := s.calls.Add(1)
	s.mu.Lock()
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()
	if s.answer != nil {
		if err := s.answer(req, n); err != nil {
			return Token{}, err
		}
	}
	now := s.clock.Now()
	return Token{
		AccessToken: fmt.Sprintf("%s/%s#%d", req.Key.Provider, req.Key.Tenant, n),
		TokenType:   "bearer",
		ExpiresAt:   now.Add(s.lifetime),
		Lifetime:    s.lifetime,
	}, nil
}

// count is the number of fetches for reason.
func (s *scripted) count(reason Reason) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.reqs {
		if r.Reason == reason {
			n++
		}
	}
	return n
}

func (s *scripted) last() FetchRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqs[len(s.reqs)-1]
}

// newScriptedCache is a cache on a scripted source and the fake clock's
// timers, without jitter, with a 5 s minimum refresh interval.
func newScriptedCache(t *testing.T, lifetime time.Duration, answer func(FetchRequest, int64) error, mod func(*Config)) (*Cache, *scripted, *clock, *recorder) {
	t.Helper()
	clk := newClock()
	src := &scripted{clock: clk, lifetime: lifetime, answer: answer}
	rec := &recorder{}
	cfg := Config{
		Source:             src,
		Now:                clk.Now,
		AfterFunc:          clk.AfterFunc,
		RefreshJitter:      -1,
		Observer:           rec,
		NegativeTTL:        5 * time.Second,
		MinRefreshInterval: 5 * time.Second,
		IsNegative:         func(err error) bool { return errors.Is(err, errNotFound) },
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

// peek is key's current view, read without serving it.
func (c *Cache) peek(key Key) *view {
	c.mu.Lock()
	s := c.states[key]
	c.mu.Unlock()
	if s == nil {
		return emptyView
	}
	return s.view.Load()
}

// stateOf is key's live state, nil when there is none.
func (c *Cache) stateOf(key Key) *state {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.states[key]
}

var errUnavailable = errors.New("upstream unavailable")

// A refresh ahead stores T2 while a forced refresh started from T1 runs;
// the forced refresh then fails transiently. T2 — a token nobody was
// refused with — must stay.
func TestFresherTokenSurvivesAFailedForcedRefresh(t *testing.T) {
	gate := make(chan struct{})
	c, src, clk, _ := newScriptedCache(t, 100*time.Second, func(req FetchRequest, _ int64) error {
		if req.Reason == ReasonForced {
			<-gate
			return errUnavailable
		}
		return nil
	}, nil)
	t1 := mustGet(t, c, tenantA)
	forced := make(chan error, 1)
	go func() {
		_, err := c.Refresh(context.Background(), tenantA, t1.AccessToken)
		forced <- err
	}()
	waitFor(t, "the forced exchange", func() bool { return src.count(ReasonForced) == 1 })
	clk.Advance(80 * time.Second) // the refresh point: the timer refreshes ahead
	waitFor(t, "the refresh ahead", func() bool { return c.peek(tenantA).tok.AccessToken != t1.AccessToken })
	t2 := c.peek(tenantA).tok
	close(gate)
	<-forced

	if got := mustGet(t, c, tenantA); got.AccessToken != t2.AccessToken {
		t.Fatalf("after the failed forced refresh Get = %q, want the fresher %q", got.AccessToken, t2.AccessToken)
	}
	if n := src.calls.Load(); n != 3 {
		t.Fatalf("source called %d times, want 3 (miss, forced, ahead): the fresher token was dropped", n)
	}
}

// The reverse: a slower normal fetch must not overwrite a newer forced
// result.
func TestSlowFetchDoesNotOverwriteANewerForcedToken(t *testing.T) {
	gate := make(chan struct{})
	c, src, clk, _ := newScriptedCache(t, 100*time.Second, func(req FetchRequest, _ int64) error {
		if req.Reason == ReasonAhead {
			<-gate
		}
		return nil
	}, nil)
	t1 := mustGet(t, c, tenantA)
	clk.Advance(80 * time.Second)
	mustGet(t, c, tenantA) // starts the slow refresh ahead
	waitFor(t, "the refresh ahead", func() bool { return src.count(ReasonAhead) == 1 })
	t3, err := c.Refresh(context.Background(), tenantA, t1.AccessToken)
	if err != nil || t3.AccessToken == t1.AccessToken {
		t.Fatalf("Refresh = %q, %v; want a new token", t3.AccessToken, err)
	}
	close(gate)
	waitFor(t, "the refresh ahead to end", func() bool { return c.refreshIdle(tenantA) })
	if got := mustGet(t, c, tenantA); got.AccessToken != t3.AccessToken {
		t.Fatalf("Get = %q, want the forced %q: a slower fetch overwrote it", got.AccessToken, t3.AccessToken)
	}
}

// Ten POSTs at the same instant while the upstream fails make one forced
// exchange; the others get its error as a 503 with a Retry-After up to the
// interval's end.
func TestConcurrentForcedRefreshesOfAFailingUpstreamMakeOneExchange(t *testing.T) {
	c, src, _, _ := newScriptedCache(t, time.Hour, nil, nil)
	t1 := mustGet(t, c, tenantA)
	src.answer = nil
	fail := func(FetchRequest, int64) error { return errUnavailable }
	src.mu.Lock()
	src.answer = fail
	src.mu.Unlock()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, 10)
	for i := range errs {
		wg.Go(func() {
			<-start
			// Arrivals spread over a few milliseconds, as over HTTP: most
			// come after the first exchange has failed.
			time.Sleep(time.Duration(i) * 500 * time.Microsecond)
			_, errs[i] = c.Refresh(context.Background(), tenantA, t1.AccessToken)
		})
	}
	close(start)
	wg.Wait()
	if n := src.count(ReasonForced); n != 1 {
		t.Fatalf("%d forced exchanges, want 1", n)
	}
	for _, err := range errs {
		if !errors.Is(err, errUnavailable) {
			t.Fatalf("Refresh = %v, want the exchange's error", err)
		}
		var limited *RefreshLimitedError
		if errors.As(err, &limited) && (limited.ErrorCode() != "TENANT_SERVICE_UNAVAILABLE" || limited.RetryAfter() <= 0 || limited.RetryAfter() > 5*time.Second) {
			t.Fatalf("limited answer: code %s, Retry-After %v", limited.ErrorCode(), limited.RetryAfter())
		}
	}
	// The refused token stays served: the failure was transient.
	if got := mustGet(t, c, tenantA); got.AccessToken != t1.AccessToken {
		t.Fatal("a transient forced failure dropped the token")
	}
}

// A refresh ahead that started before a forced refresh must not reset the
// forced refresh's time when it ends: a POST 1 s later makes no exchange.
func TestPostOneSecondAfterAForcedRefreshMakesNoExchange(t *testing.T) {
	gate := make(chan struct{})
	c, src, clk, _ := newScriptedCache(t, 100*time.Second, func(req FetchRequest, _ int64) error {
		if req.Reason == ReasonAhead {
			<-gate
		}
		return nil
	}, nil)
	mustGet(t, c, tenantA)
	clk.Advance(80 * time.Second)
	mustGet(t, c, tenantA) // the refresh ahead starts and waits
	waitFor(t, "the refresh ahead", func() bool { return src.count(ReasonAhead) == 1 })
	forced, err := c.Refresh(context.Background(), tenantA, "")
	if err != nil {
		t.Fatal(err)
	}
	close(gate)
	waitFor(t, "the refresh ahead to end", func() bool { return c.refreshIdle(tenantA) })
	clk.Advance(time.Second)
	again, err := c.Refresh(context.Background(), tenantA, "")
	if err != nil {
		t.Fatal(err)
	}
	if n := src.count(ReasonForced); n != 1 {
		t.Fatalf("%d forced exchanges within the interval, want 1", n)
	}
	if again.AccessToken != forced.AccessToken {
		t.Fatalf("POST inside the interval = %q, want the interval's %q", again.AccessToken, forced.AccessToken)
	}
}

// The limit outlives a negative entry, an eviction and a failure.
func TestForcedLimitOutlivesEvictionAndNegativeEntries(t *testing.T) {
	var notFound atomic.Bool
	c, src, clk, _ := newScriptedCache(t, time.Hour, func(req FetchRequest, _ int64) error {
		if notFound.Load() {
			return errNotFound
		}
		return nil
	}, func(cfg *Config) {
		cfg.Capacity = 1
		cfg.NegativeTTL = time.Second // shorter than the interval
	})
	t1 := mustGet(t, c, tenantA)
	notFound.Store(true)
	if _, err := c.Refresh(context.Background(), tenantA, t1.AccessToken); !errors.Is(err, errNotFound) {
		t.Fatalf("Refresh = %v, want not found", err)
	}
	clk.Advance(2 * time.Second) // the negative entry is over, the interval is not
	notFound.Store(false)
	mustGet(t, c, Key{"genesys", "other"}) // would evict a's token
	if _, err := c.Refresh(context.Background(), tenantA, ""); !errors.Is(err, errNotFound) {
		t.Fatalf("Refresh inside the interval = %v, want the interval's error", err)
	}
	if n := src.count(ReasonForced); n != 1 {
		t.Fatalf("%d forced exchanges within the interval, want 1", n)
	}
	clk.Advance(3 * time.Second)
	if _, err := c.Refresh(context.Background(), tenantA, ""); err != nil {
		t.Fatalf("Refresh after the interval: %v", err)
	}
	if n := src.count(ReasonForced); n != 2 {
		t.Fatalf("%d forced exchanges, want 2", n)
	}
}

// A refused token named by the caller that the cache no longer holds: the
// newer cached token is answered with no exchange.
func TestRefreshWithAReplacedTokenAnswersTheNewerOne(t *testing.T) {
	c, src, _, _ := newScriptedCache(t, time.Hour, nil, nil)
	t1 := mustGet(t, c, tenantA)
	t2, err := c.Refresh(context.Background(), tenantA, t1.AccessToken)
	if err != nil || t2.AccessToken == t1.AccessToken {
		t.Fatalf("Refresh = %q, %v", t2.AccessToken, err)
	}
	if got := src.last(); got.Refused != t1.AccessToken || got.Current.AccessToken != t1.AccessToken {
		t.Fatalf("forced FetchRequest: Refused %q, Current %q; want both %q", got.Refused, got.Current.AccessToken, t1.AccessToken)
	}
	// A second app refused with t1 too: t2 is answered, nothing exchanged,
	// even long after the interval.
	for range 3 {
		got, err := c.Refresh(context.Background(), tenantA, t1.AccessToken)
		if err != nil || got.AccessToken != t2.AccessToken {
			t.Fatalf("Refresh(t1) = %q, %v; want %q", got.AccessToken, err, t2.AccessToken)
		}
	}
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2", n)
	}
}

// With -refresh-at 0.95 a 5-minute token (margin 30 s) would refresh at
// 285 s, past its margin at 270 s; clamped to 243 s it refreshes ahead.
func TestFiveMinuteTokenWithRefreshAt095RefreshesAhead(t *testing.T) {
	c, src, clk, _ := newScriptedCache(t, 5*time.Minute, nil, func(cfg *Config) { cfg.RefreshAt = 0.95 })
	t1 := mustGet(t, c, tenantA)
	clk.Advance(250 * time.Second)
	if got := mustGet(t, c, tenantA); got.AccessToken != t1.AccessToken {
		t.Fatal("the current token is not served while the refresh runs")
	}
	waitFor(t, "a refresh ahead", func() bool { return src.count(ReasonAhead) == 1 })
	waitFor(t, "the new token", func() bool { return c.peek(tenantA).tok.AccessToken != t1.AccessToken })
	clk.Advance(20 * time.Second) // t1's margin
	if got := mustGet(t, c, tenantA); got.AccessToken == t1.AccessToken {
		t.Fatal("served inside the margin")
	}
	if n := src.count(ReasonMiss); n != 1 {
		t.Fatalf("%d misses, want 1: the expiry became a blocking miss", n)
	}
}

// A token served once is refreshed by the timer at its refresh point, with
// no request; the token that refresh fetched, never served, is not refreshed
// again and is dropped at its margin.
func TestTimerRefreshesOnlyTokensInUse(t *testing.T) {
	c, src, clk, rec := newScriptedCache(t, 100*time.Second, nil, nil)
	t1 := mustGet(t, c, tenantA)
	clk.Advance(80*time.Second - time.Millisecond)
	if n := src.calls.Load(); n != 1 {
		t.Fatal("refreshed before the refresh point")
	}
	clk.Advance(time.Millisecond)
	waitFor(t, "the timer's refresh", func() bool { return c.peek(tenantA).tok.AccessToken != t1.AccessToken })
	if got := src.last(); got.Reason != ReasonAhead || got.Current.AccessToken != t1.AccessToken {
		t.Fatalf("timer refresh: reason %v, current %q", got.Reason, got.Current.AccessToken)
	}
	if rec.get("refresh_timer") != 1 || rec.get("refresh_ahead") != 0 {
		t.Fatalf("refreshes by timer %d, by request %d; want 1, 0", rec.get("refresh_timer"), rec.get("refresh_ahead"))
	}
	t2 := c.peek(tenantA)
	// The scheduler has looked at t2's refresh point once it asks to be
	// woken at its margin instead.
	clk.Advance(80 * time.Second)
	waitFor(t, "the scheduler to pass t2's refresh point", func() bool {
		s := c.stateOf(tenantA)
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.wakeAt == t2.usableUntil
	})
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times, want 2: a token nobody asked for was refreshed", n)
	}
	clk.Advance(10 * time.Second)
	waitFor(t, "the unused token to be dropped", func() bool { return c.stateOf(tenantA) == nil && c.Len() == 0 })
}

// A failed background refresh is tried again on the schedule — after a
// quarter of the time left, here — and the recovered upstream is used
// before the margin, with no request.
func TestFailedTimerRefreshIsRetriedBeforeTheMargin(t *testing.T) {
	var down atomic.Bool
	c, src, clk, _ := newScriptedCache(t, 100*time.Second, func(FetchRequest, int64) error {
		if down.Load() {
			return errUnavailable
		}
		return nil
	}, nil)
	t1 := mustGet(t, c, tenantA)
	issued := clk.Now()
	down.Store(true)
	clk.Advance(80 * time.Second)
	waitFor(t, "the failed refresh", func() bool { return src.calls.Load() == 2 && c.refreshIdle(tenantA) })
	// 10 s left before the margin: the next try is 2.5 s later.
	s := c.stateOf(tenantA)
	s.mu.Lock()
	next := c.clk.time(s.nextTry)
	s.mu.Unlock()
	if want := issued.Add(82500 * time.Millisecond); !next.Equal(want) {
		t.Fatalf("next try at %v after issue, want 82.5 s", next.Sub(issued))
	}
	down.Store(false)
	clk.Advance(2500 * time.Millisecond)
	waitFor(t, "the retried refresh", func() bool { return c.peek(tenantA).tok.AccessToken != t1.AccessToken })
	if got := mustGet(t, c, tenantA); got.AccessToken == t1.AccessToken {
		t.Fatal("the recovered upstream's token is not served")
	}
	if n := src.count(ReasonMiss); n != 1 {
		t.Fatalf("%d misses, want 1", n)
	}
}

// A flood of unknown tenants answered with a cached error never evicts a
// token: negative entries have a bound of their own.
func TestFloodOfUnknownTenantsNeverEvictsAToken(t *testing.T) {
	good := Key{"genesys", "good"}
	c, src, _, rec := newScriptedCache(t, time.Hour, func(req FetchRequest, _ int64) error {
		if req.Key != good {
			return errNotFound
		}
		return nil
	}, func(cfg *Config) {
		cfg.Capacity = 100
		cfg.NegativeCapacity = 50
	})
	tok := mustGet(t, c, good)
	for i := range 1200 {
		if _, err := c.Get(context.Background(), Key{"genesys", fmt.Sprint("ghost-", i)}); !errors.Is(err, errNotFound) {
			t.Fatalf("Get(ghost) = %v", err)
		}
	}
	if got := mustGet(t, c, good); got.AccessToken != tok.AccessToken {
		t.Fatal("the flood evicted the good tenant's token")
	}
	if n := src.count(ReasonMiss); n != 1201 {
		t.Fatalf("%d misses, want 1201", n)
	}
	if rec.get("evicted") != 0 {
		t.Fatalf("%d token evictions", rec.get("evicted"))
	}
	waitFor(t, "the registry to shrink to its bounds", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.states) <= 100+50
	})
}

// Close stops the timer and the background refreshes.
func TestCloseStopsBackgroundRefreshes(t *testing.T) {
	started := make(chan struct{}, 1)
	c, _, clk, _ := newScriptedCache(t, 100*time.Second, nil, nil)
	src := c.cfg.Source.(*scripted)
	src.answer = func(req FetchRequest, _ int64) error {
		if req.Reason == ReasonAhead {
			started <- struct{}{}
			time.Sleep(time.Millisecond)
		}
		return nil
	}
	mustGet(t, c, tenantA)
	clk.Advance(80 * time.Second)
	<-started
	c.Close() // returns with the refresh ended (goleak checks the rest)
	clk.Advance(time.Hour)
	if n := src.calls.Load(); n != 2 {
		t.Fatalf("source called %d times after Close, want 2", n)
	}
}

// Evicted tokens leave nothing behind: their state records are released and
// their pending wake-ups removed, so a flood of distinct tenants costs at
// most the cache's bounds.
func TestEvictedTokensLeaveNoStateOrWakeUp(t *testing.T) {
	c, _, _, _ := newScriptedCache(t, time.Hour, nil, func(cfg *Config) { cfg.Capacity = 10 })
	for i := range 200 {
		mustGet(t, c, Key{"genesys", fmt.Sprint("t", i)})
	}
	waitFor(t, "the evicted states to be released", func() bool {
		c.mu.Lock()
		states := len(c.states)
		c.mu.Unlock()
		c.sched.mu.Lock()
		wakes := len(c.sched.wakes)
		c.sched.mu.Unlock()
		return states <= 10 && wakes <= 10
	})
}
