package cache

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// steppedClock reads as time.Now does, every reading carrying a monotonic
// reading, with a wall clock that can be stepped (NTP setting the clock)
// while the monotonic reading goes on.
type steppedClock struct {
	mu   sync.Mutex
	base time.Time // a reading of time.Now: wall and monotonic
	mono time.Duration
	step time.Duration
}

func newSteppedClock() *steppedClock { return &steppedClock{base: time.Now()} }

// timeLayout mirrors time.Time's fields, to build a reading whose wall and
// monotonic parts differ as they do after the wall clock is stepped.
type timeLayout struct {
	wall uint64
	ext  int64
	loc  *time.Location
}

func (c *steppedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.base.Add(c.mono)
	w := c.base.Add(c.mono + c.step)
	(*timeLayout)(unsafe.Pointer(&t)).wall = (*timeLayout)(unsafe.Pointer(&w)).wall
	return t
}

// Advance moves both readings; Step moves the wall clock only.
func (c *steppedClock) Advance(d time.Duration) { c.mu.Lock(); c.mono += d; c.mu.Unlock() }
func (c *steppedClock) Step(d time.Duration)    { c.mu.Lock(); c.step += d; c.mu.Unlock() }

func TestSteppedClockReadings(t *testing.T) {
	clk := newSteppedClock()
	t0 := clk.Now()
	clk.Step(time.Hour)
	t1 := clk.Now()
	if d := t1.Sub(t0); d != 0 {
		t.Fatalf("monotonic difference %v, want 0", d)
	}
	if d := t1.Round(0).Sub(t0.Round(0)); d != time.Hour {
		t.Fatalf("wall difference %v, want 1h", d)
	}
}

// newSteppedCache is a cache on clk whose Source mints tokens of lifetime,
// their ExpiresAt a wall time (as a shared cache's entry decodes it) when
// wall is set, a reading of clk (with its monotonic reading) otherwise.
func newSteppedCache(t *testing.T, clk *steppedClock, lifetime time.Duration, wall bool) (*Cache, func() int) {
	t.Helper()
	var mu sync.Mutex
	calls := 0
	src := SourceFunc(func(_ context.Context, req FetchRequest) (Token, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		exp := clk.Now().Add(lifetime)
		if wall {
			exp = time.Unix(0, exp.UnixNano())
		}
		return Token{AccessToken: fmt.Sprintf("%s#%d", req.Key.Tenant, n), TokenType: "bearer",
			ExpiresAt: exp, Lifetime: lifetime}, nil
	})
	c, err := New(Config{
		Source:        src,
		Now:           clk.Now,
		AfterFunc:     func(time.Duration, func()) func() bool { return func() bool { return true } },
		RefreshJitter: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, func() int { mu.Lock(); defer mu.Unlock(); return calls }
}

// A token whose expiry is a wall time (a shared cache's) expires by the
// wall clock: once the clock is stepped past its margin it is not served,
// though the monotonic clock has not moved.
func TestWallExpiryFollowsASteppedClock(t *testing.T) {
	clk := newSteppedClock()
	c, calls := newSteppedCache(t, clk, time.Hour, true)
	ctx := context.Background()
	if _, err := c.Get(ctx, tenantA); err != nil {
		t.Fatal(err)
	}
	clk.Step(time.Hour)
	tok, err := c.Get(ctx, tenantA)
	if err != nil {
		t.Fatal(err)
	}
	if now := clk.Now(); !now.Before(tok.UsableUntil()) {
		t.Fatalf("served a token %v past its margin by the wall clock", now.Sub(tok.UsableUntil()))
	}
	if tok, ok := c.Cached(ctx, tenantA); ok && !clk.Now().Before(tok.UsableUntil()) {
		t.Fatal("Cached answered a token past its margin by the wall clock")
	}
	if n := calls(); n != 2 {
		t.Fatalf("source called %d times, want 2", n)
	}
}

// A token whose expiry carries a monotonic reading (the upstream's
// expires_in from a reading of the clock) ignores a step of the wall clock,
// either way: no fetch for it, and it still expires on time.
func TestMonotonicExpiryIgnoresASteppedClock(t *testing.T) {
	for _, step := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(step.String(), func(t *testing.T) {
			clk := newSteppedClock()
			c, calls := newSteppedCache(t, clk, time.Hour, false)
			ctx := context.Background()
			first, err := c.Get(ctx, tenantA)
			if err != nil {
				t.Fatal(err)
			}
			clk.Step(step)
			if tok, err := c.Get(ctx, tenantA); err != nil || tok.AccessToken != first.AccessToken {
				t.Fatalf("after the step: %v, %v; want the cached token", tok.AccessToken, err)
			}
			clk.Advance(time.Hour - Margin(time.Hour))
			if tok, err := c.Get(ctx, tenantA); err != nil || tok.AccessToken == first.AccessToken {
				t.Fatalf("at the margin: %v, %v; want a new token", tok.AccessToken, err)
			}
			if n := calls(); n != 2 {
				t.Fatalf("source called %d times, want 2", n)
			}
		})
	}
}

// steppedTimers is Config.AfterFunc on a steppedClock's monotonic reading:
// fire runs the timers due. A timer asked for no delay is counted, not run:
// a wake-up that is not due by the time it runs asks again at once, and
// the scheduler spins.
type steppedTimers struct {
	clk    *steppedClock
	mu     sync.Mutex
	timers []steppedTimer
	now    int // timers asked for with no delay
}

type steppedTimer struct {
	at time.Duration
	f  func()
}

func (st *steppedTimers) AfterFunc(d time.Duration, f func()) func() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if d <= 0 {
		st.now++
		return func() bool { return false }
	}
	st.clk.mu.Lock()
	at := st.clk.mono + d
	st.clk.mu.Unlock()
	st.timers = append(st.timers, steppedTimer{at: at, f: f})
	return func() bool { return true }
}

// fire runs the timers due on the monotonic reading.
func (st *steppedTimers) fire() {
	st.clk.mu.Lock()
	mono := st.clk.mono
	st.clk.mu.Unlock()
	st.mu.Lock()
	var due []func()
	kept := st.timers[:0]
	for _, t := range st.timers {
		if t.at <= mono {
			due = append(due, t.f)
		} else {
			kept = append(kept, t)
		}
	}
	st.timers = kept
	st.mu.Unlock()
	for _, f := range due {
		f()
	}
}

func (st *steppedTimers) immediate() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.now
}

// limitedErr is a shared cache's refusal of a forced exchange: its interval
// ends at a wall time.
type limitedErr struct{ until time.Time }

func (e limitedErr) Error() string           { return "forced refresh limited" }
func (e limitedErr) LimitedUntil() time.Time { return e.until }

// Once the wall clock is stepped back, a wake-up for a wall instant (a
// forced interval that ends at a shared cache's wall time) is not due
// until the wall clock reaches it: the scheduler waits for it rather than
// waking again at once.
func TestWallIntervalWakesOnceAfterAStepBack(t *testing.T) {
	clk := newSteppedClock()
	timers := &steppedTimers{clk: clk}
	const iv = 10 * time.Second
	src := SourceFunc(func(_ context.Context, req FetchRequest) (Token, error) {
		if req.Reason == ReasonForced {
			return Token{}, limitedErr{until: time.Unix(0, clk.Now().Add(iv).UnixNano())}
		}
		exp := clk.Now().Add(time.Hour)
		return Token{AccessToken: "t", TokenType: "bearer", ExpiresAt: exp, Lifetime: time.Hour}, nil
	})
	c, err := New(Config{Source: src, Now: clk.Now, AfterFunc: timers.AfterFunc,
		RefreshJitter: -1, MinRefreshInterval: iv})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ctx := context.Background()
	if _, err := c.Refresh(ctx, tenantA, "refused"); err == nil {
		t.Fatal("a limited forced refresh answered a token")
	}
	clk.Step(-time.Hour)
	clk.Advance(iv)
	before := timers.immediate()
	timers.fire()
	waitFor(t, "the wake-up to be handled", func() bool {
		return timers.immediate() > before || c.sched.settled(clk.Now())
	})
	if n := timers.immediate() - before; n != 0 {
		t.Fatalf("the scheduler woke %d times at once for an interval the wall clock has not reached", n)
	}
}
