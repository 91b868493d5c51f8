package cache

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
)

// scheduler wakes states up at given instants of the cache's clock: at a
// token's refresh point (the timer's refresh ahead), at the next try after
// a failed one, at its margin (to drop it), at the end of a forced-refresh
// interval (to release the state). One goroutine and one timer serve every
// state; a wake-up only computes what is due, so a stale one is harmless.
// Each state has at most one pending wake-up, removed when the state is
// released, so the heap holds no more than the live states.
//
// Lock order: a state's mu, then the scheduler's mu.
type scheduler struct {
	clk       instants
	afterFunc func(time.Duration, func()) func() bool
	tick      func(s *state, at instant)

	mu       sync.Mutex
	wakes    wakeHeap
	armedAt  instant
	disarm   func() bool // stops the last armed timer (armedAt); nil before the first
	closed   bool        // by close: no more wake-ups
	ticking  bool        // run is handling wake-ups it popped
	signal   chan struct{}
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

func newScheduler(clk instants, afterFunc func(time.Duration, func()) func() bool, tick func(*state, instant)) *scheduler {
	sc := &scheduler{clk: clk, afterFunc: afterFunc, tick: tick,
		signal: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go sc.run()
	return sc
}

// at asks for s to be woken at t, unless an earlier wake-up is pending
// (which will ask again). Called with s.mu held.
func (sc *scheduler) at(s *state, t instant) {
	if s.wakeAt != 0 && t >= s.wakeAt {
		return
	}
	s.wakeAt = t
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		return
	}
	s.heapAt = t
	if s.heapIdx >= 0 {
		heap.Fix(&sc.wakes, int(s.heapIdx))
	} else {
		heap.Push(&sc.wakes, s)
	}
	sc.arm()
}

// forget drops s's pending wake-up, for a state that is released. Called
// with s.mu held.
func (sc *scheduler) forget(s *state) {
	s.wakeAt = 0
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if s.heapIdx >= 0 {
		heap.Remove(&sc.wakes, int(s.heapIdx))
	}
}

// arm sets the timer for the earliest wake-up. Called with sc.mu held.
func (sc *scheduler) arm() {
	if len(sc.wakes) == 0 {
		return
	}
	next := sc.wakes[0].heapAt
	now := sc.clk.now()
	if sc.disarm != nil && sc.armedAt > now && next >= sc.armedAt {
		return // the armed timer fires in time
	}
	if sc.disarm != nil {
		sc.disarm() // too late, or already fired
	}
	sc.armedAt = next
	sc.disarm = sc.afterFunc(max(time.Duration(next-now), 0), sc.poke)
}

func (sc *scheduler) poke() {
	select {
	case sc.signal <- struct{}{}:
	default:
	}
}

func (sc *scheduler) run() {
	defer close(sc.done)
	for {
		select {
		case <-sc.stop:
			return
		case <-sc.signal:
		}
		now := sc.clk.now()
		sc.mu.Lock()
		var due []wake
		for len(sc.wakes) > 0 && sc.wakes[0].heapAt <= now {
			s := heap.Pop(&sc.wakes).(*state)
			due = append(due, wake{at: s.heapAt, s: s})
		}
		sc.arm()
		sc.ticking = len(due) > 0
		sc.mu.Unlock()
		for _, w := range due {
			sc.tick(w.s, w.at)
		}
		if len(due) > 0 {
			sc.mu.Lock()
			sc.ticking = false
			sc.mu.Unlock()
		}
	}
}

// settled reports whether every wake-up due at now has been handled: none
// is pending, none is being handled, and no timer signal waits.
func (sc *scheduler) settled(now time.Time) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return !sc.ticking && len(sc.signal) == 0 && (len(sc.wakes) == 0 || sc.wakes[0].heapAt > sc.clk.of(now))
}

// close stops the scheduler and waits for its goroutine.
func (sc *scheduler) close() {
	sc.stopOnce.Do(func() {
		close(sc.stop)
		<-sc.done
		sc.mu.Lock()
		sc.closed = true
		if sc.disarm != nil {
			sc.disarm()
			sc.disarm = nil
		}
		for _, s := range sc.wakes {
			s.heapIdx = -1
		}
		sc.wakes = nil
		sc.mu.Unlock()
	})
}

// wake is one wake-up taken off the heap.
type wake struct {
	at instant
	s  *state
}

// wakeHeap is a min-heap of states by their pending wake-up, heapAt
// (container/heap); each state's heapIdx is its index, -1 when not in it.
// Guarded by the scheduler's mu, as are heapAt and heapIdx.
type wakeHeap []*state

func (h wakeHeap) Len() int           { return len(h) }
func (h wakeHeap) Less(i, j int) bool { return h[i].heapAt < h[j].heapAt }
func (h wakeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = int32(i), int32(j)
}
func (h *wakeHeap) Push(x any) {
	s := x.(*state)
	s.heapIdx = int32(len(*h))
	*h = append(*h, s)
}
func (h *wakeHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.heapIdx = -1
	return s
}

// tick is the scheduler's wake-up of s at the instant at: the timer's
// refresh ahead of a token in use, the drop of a token past its margin, and
// the next wake-up.
func (c *Cache) tick(s *state, at instant) {
	s.mu.Lock()
	if s.dead || s.wakeAt != at {
		s.mu.Unlock()
		return // superseded by an earlier wake-up, which asked again
	}
	s.wakeAt = 0
	t := c.cfg.Now()
	var next instant // on the clock's timeline
	earliest := func(i instant) {
		if next == 0 || i < next {
			next = i
		}
	}
	if v := s.view.Load(); v.usableUntil != 0 {
		now := c.clk.on(t, v.wall)
		earliest := func(i instant) { earliest(c.clk.clock(i, v.wall, t)) }
		if now >= v.usableUntil {
			c.unindexToken(s)
			s.publish(&view{gen: v.gen})
		} else {
			// Only a token handed to a caller since it was fetched is
			// renewed: one nobody asked for is left to expire.
			if !s.refreshing && v.served.Load() {
				due := max(v.refreshAt, s.nextTry)
				if now < due {
					earliest(due)
				} else {
					c.startAhead(s, v, t, triggerTimer)
				}
			}
			earliest(v.usableUntil)
		}
	}
	if c.forcedWindowOpen(s, t) {
		end := s.forced.at.Add(c.cfg.MinRefreshInterval)
		earliest(c.clk.clock(c.clk.of(end), onWall(end), t))
	}
	if next != 0 {
		c.sched.at(s, next)
	}
	s.mu.Unlock()
	c.release(s)
}

// requestAhead starts a refresh ahead for a request that was served v past
// its refresh point. The refresh belongs to no request: its span starts a
// new trace, linked to the request's.
func (c *Cache) requestAhead(ctx context.Context, s *state, v *view, now time.Time) {
	link := trace.LinkFromContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.startAhead(s, v, now, triggerRefreshAhead, link)
}

// startAhead starts one background refresh of v, s's current token, unless
// one runs, the last one failed too recently, or the cache is closing. It
// shares s's normal flight (a miss may join it) and the fetch slots.
// Called with s.mu held.
func (c *Cache) startAhead(s *state, v *view, now time.Time, trigger string, links ...trace.Link) {
	if at := c.clk.on(now, v.wall); s.dead || s.refreshing || s.gen != v.gen || !v.usable(at) || at < s.nextTry || c.bg.Err() != nil {
		return
	}
	s.refreshing = true
	s.noAheadUntil.Store(noAhead)
	if trigger == triggerTimer {
		c.obs.RefreshTimer(s.key)
	} else {
		c.obs.RefreshAhead(s.key)
	}
	var ch <-chan singleflight.Result
	if s.normalRunning {
		ch = c.joinFlight(s, flightNormal)
	} else {
		req := FetchRequest{Key: s.key, Reason: ReasonAhead, Current: v.tok}
		ch = c.startFlight(s, flightNormal, req, c.bg, trigger, links...)
	}
	c.bgWG.Add(1)
	gen := v.gen
	go func() {
		defer c.bgWG.Done()
		r := <-ch
		f, _ := r.Val.(flight)
		failed := f.failed
		if failed == nil {
			failed = r.Err
		}
		c.aheadDone(s, gen, failed)
	}()
}

// aheadDone ends the refresh ahead of generation gen's token. After a
// failure the token stays served until its margin and the refresh is tried
// again after retryDelay, by the scheduler, so that an upstream that
// recovers is used before any request fails.
func (c *Cache) aheadDone(s *state, gen uint32, failed error) {
	s.mu.Lock()
	s.refreshing = false
	now := c.cfg.Now()
	v := s.view.Load()
	switch {
	case s.dead || v.gen != gen || !v.usable(c.clk.on(now, v.wall)):
		// Replaced, dropped or past its margin: nothing to retry.
	case failed == nil:
		s.noAheadUntil.Store(0)
	default:
		usableUntil := v.tok.UsableUntil()
		if d, ok := retryDelay(now, usableUntil, c.cfg.RefreshRetryDelay); ok {
			s.nextTry = c.clk.on(now.Add(d), v.wall)
			c.sched.at(s, c.clk.clock(s.nextTry, v.wall, now))
		} else {
			s.nextTry = v.usableUntil
		}
		s.noAheadUntil.Store(int64(s.nextTry))
		c.cfg.Logger.Warn("token refresh ahead of expiry failed; serving the current token until its safety margin",
			"provider", s.key.Provider, "tenant", s.key.Tenant,
			"usable_until", usableUntil, "next_try", c.clk.time(s.nextTry), "error", failed.Error())
	}
	s.mu.Unlock()
	c.release(s)
}
