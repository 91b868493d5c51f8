package cache

import (
	"context"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unique"

	"github.com/jellydator/ttlcache/v3"
)

// view is what the cache serves for one key at one instant, and what the
// token and negative indexes hold: the hit path reads it, and never its
// state. It is immutable once published, but for served. It holds a token
// (usableUntil is not zero), a cached error (neg is not nil), or nothing.
//
// Every cached tenant keeps one: its fields are packed into the 128-byte
// size class (TestRecordsKeepTheirSizeClass).
type view struct {
	// The fields a hit reads come first.

	// usableUntil is the token's safety margin; zero when the view holds
	// no token.
	usableUntil instant
	refreshAt   instant
	// tok is the token; the zero Token when the view holds none. A hit
	// returns it as it is: the copy of one field.
	tok Token

	// s is the state the view belongs to; nil for the views that hold
	// nothing, which are never indexed.
	s *state
	// neg, when not nil, is a cached error (a negative entry); the view
	// then holds no token.
	neg *negative
	// gen is the state's generation when the view was published.
	gen uint32
	// wall: the token's expiry carries no monotonic reading, and its
	// instants (and the state's nextTry) are on the wall timeline; a
	// reading of now is compared with them there (instants.on).
	wall bool
	// served: the token was handed to a caller since it was fetched. The
	// scheduler refreshes ahead only a served token, never one nobody
	// asked for.
	served atomic.Bool
}

// negative is a cached error, valid until until.
type negative struct {
	err   error
	until instant
}

// cachedErr is v's cached error while it is valid at now; nil otherwise.
func (v *view) cachedErr(now instant) error {
	if v.neg != nil && now < v.neg.until {
		return v.neg.err
	}
	return nil
}

// emptyView holds nothing, at generation 0.
var emptyView = &view{}

// state is the one record of a (provider, tenant): what is served, the
// generation that orders the writes of fetches, the forced-refresh limit,
// the refresh schedule and its retry state, the running flights. Every
// cached tenant keeps one: its fields are packed into the 128-byte size
// class (TestRecordsKeepTheirSizeClass).
//
// Invariants, all under mu:
//   - at most one live (not dead) state per key exists, in Cache.states;
//     a dead state is never written again;
//   - gen grows by one with every write of a fetch's outcome (a token, a
//     negative entry, a dropped token) and only then: a fetch applies its
//     outcome only if gen is still the one it started from, so a slower or
//     failed fetch never undoes a later one;
//   - the last forced exchange belongs to the state, not to the view,
//     so no write, negative entry or eviction resets the forced-refresh limit
//     while the state lives, and the state lives until the interval is over.
type state struct {
	key Key

	// view is the published view; never nil.
	view atomic.Pointer[view]
	// noAheadUntil (an instant) is when a request may next try to start a
	// refresh ahead: MaxInt64 while one runs, the retry time after one
	// failed, 0 otherwise. It keeps stale hits off mu.
	noAheadUntil atomic.Int64

	mu sync.Mutex

	// tokItem and negItem are the state's items in the token and negative
	// indexes; nil when not indexed there.
	tokItem, negItem *ttlcache.Item[Key, *view]

	// forced is the last forced exchange; nil before the first (most
	// states never have one, so it is kept apart).
	forced *forcedExchange

	// nextTry is the earliest next refresh ahead after one failed, on
	// the timeline of the view's instants (view.wall); zero after a token
	// is stored.
	nextTry instant

	// wakeAt is the earliest pending wake-up of the scheduler for this
	// state; zero when none is pending.
	wakeAt instant

	// heapAt and heapIdx are the state's place in the scheduler's heap,
	// guarded by the scheduler's mu; heapIdx is -1 when it has none.
	heapAt  instant
	heapIdx int32

	// gen is the generation (see above); 32 bits wrap only after four
	// billion writes, and a fetch compares it only for equality with the
	// one it started from.
	gen uint32

	// The flights: a normal one (miss or refresh ahead) and a forced one may
	// run at once. seq numbers name each flight in the singleflight group so
	// that a caller never joins a flight that has already applied its
	// outcome (nor one four billion flights older, gone long before).
	normalSeq, forcedSeq         uint32
	normalRunning, forcedRunning bool
	// dead: released from the registry; a caller holding it takes a new one.
	dead bool

	// refreshing: a refresh ahead runs (possibly joined to a miss flight).
	refreshing bool
}

// forcedExchange is a state's last forced exchange: when it started and,
// once it ended, its answer — what a POST inside the interval gets.
type forcedExchange struct {
	at   time.Time
	done bool
	tok  Token
	err  error
}

// publish replaces the served view. Called with mu held.
func (s *state) publish(v *view) { s.view.Store(v) }

// markServed records that v's token went to a caller. The load first keeps
// the hit path from writing a shared cache line on every hit.
func (v *view) markServed() {
	if !v.served.Load() {
		v.served.Store(true)
	}
}

// markServedToken marks the state's current token served if it is tok.
func (s *state) markServedToken(tok Token) {
	if v := s.view.Load(); v.neg == nil && v.tok.AccessToken == tok.AccessToken {
		v.markServed()
	}
}

// usable reports whether v holds a token that may be served at now. A view
// without one has a zero usableUntil, before every reading of the clock.
func (v *view) usable(now instant) bool {
	return now < v.usableUntil
}

// servable reports whether v, s's view, holds a token that may be served at
// now. A token the index has just evicted, whose eviction callback has not
// run yet, is not: it is dropped here as the callback would. Called with
// s.mu held, off the hit path.
func (c *Cache) servable(s *state, v *view, now time.Time) bool {
	if !v.usable(c.clk.on(now, v.wall)) {
		return false
	}
	if s.tokItem == nil || !c.tokens.Has(s.key) {
		s.tokItem = nil
		s.publish(&view{gen: v.gen})
		return false
	}
	return true
}

// forcedWindowOpen reports whether a forced exchange of s started less than
// the minimum refresh interval ago. Called with mu held.
func (c *Cache) forcedWindowOpen(s *state, now time.Time) bool {
	iv := c.cfg.MinRefreshInterval
	return iv > 0 && s.forced != nil && now.Before(s.forced.at.Add(iv))
}

// idle reports whether s holds nothing worth keeping: no indexed token or
// error, no flight, no forced interval still running. Called with mu held.
func (c *Cache) idle(s *state, now time.Time) bool {
	return s.tokItem == nil && s.negItem == nil && !s.normalRunning && !s.forcedRunning &&
		!s.refreshing && !c.forcedWindowOpen(s, now)
}

// stateFor returns key's live state, creating it.
func (c *Cache) stateFor(key Key) *state {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.states[key]
	if s == nil {
		// The key's strings may be slices of a larger string (the
		// request line): the state, kept for the token's life, holds a
		// copy of the tenant of its own, and the one copy of the provider.
		key = Key{Provider: unique.Make(key.Provider).Value(), Tenant: strings.Clone(key.Tenant)}
		s = &state{key: key, heapIdx: -1}
		s.view.Store(emptyView)
		c.states[key] = s
	}
	return s
}

// lockState returns key's live state with its mu held.
func (c *Cache) lockState(key Key) *state {
	for {
		s := c.stateFor(key)
		s.mu.Lock()
		if !s.dead {
			return s
		}
		s.mu.Unlock() // released meanwhile: the next stateFor makes a new one
	}
}

// release forgets s if it is idle, so that the registry holds only states
// that hold something. Called without s.mu (lock order: c.mu, then s.mu).
func (c *Cache) release(s *state) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dead && c.idle(s, c.cfg.Now()) {
		s.dead = true
		c.sched.forget(s)
		if c.states[s.key] == s {
			delete(c.states, s.key)
		}
	}
}

// storeToken makes tok, which fetch has checked is outside its safety
// margin (ttlcache would keep a TTL <= 0 for ever), the served token: a new
// generation, indexed as a token, no longer as an error, its refresh point
// scheduled. Called with mu held.
func (c *Cache) storeToken(s *state, tok Token, now time.Time) {
	s.gen++
	// Every token of a provider has the same few TokenType and APIBaseURL
	// values: one copy of each is kept, not one per tenant.
	tok.TokenType = unique.Make(tok.TokenType).Value()
	tok.APIBaseURL = unique.Make(tok.APIBaseURL).Value()
	v := &view{
		s:           s,
		tok:         tok,
		usableUntil: c.clk.of(tok.UsableUntil()),
		refreshAt:   c.clk.of(refreshPoint(tok, c.cfg.RefreshAt, c.cfg.RefreshJitter, c.cfg.Rand())),
		gen:         s.gen,
		wall:        onWall(tok.ExpiresAt),
	}
	s.publish(v)
	s.nextTry = 0
	s.noAheadUntil.Store(0)
	s.tokItem = c.tokens.Set(s.key, v, time.Duration(v.usableUntil-c.clk.on(now, v.wall)))
	if s.negItem != nil {
		s.negItem = nil
		c.negatives.Delete(s.key)
	}
	c.sched.at(s, c.clk.clock(v.refreshAt, v.wall, now))
}

// storeNegative makes err the served answer for NegativeTTL, in the
// negative index (its own bound), and drops any token. Without a
// NegativeTTL it only drops the token. Called with mu held.
func (c *Cache) storeNegative(s *state, err error, now time.Time) {
	if c.cfg.NegativeTTL <= 0 {
		c.drop(s)
		return
	}
	s.gen++
	v := &view{s: s, neg: &negative{err: err, until: c.clk.of(now.Add(c.cfg.NegativeTTL))}, gen: s.gen}
	s.publish(v)
	s.negItem = c.negatives.Set(s.key, v, c.cfg.NegativeTTL)
	c.unindexToken(s)
}

// drop removes the served token or error: a new generation holding
// nothing. Called with mu held.
func (c *Cache) drop(s *state) {
	s.gen++
	s.publish(&view{gen: s.gen})
	c.unindexToken(s)
	if s.negItem != nil {
		s.negItem = nil
		c.negatives.Delete(s.key)
	}
}

// unindexToken takes s out of the token index. Called with mu held.
func (c *Cache) unindexToken(s *state) {
	if s.tokItem != nil {
		s.tokItem = nil
		c.tokens.Delete(s.key)
	}
}

// onTokenEvicted is the token index's eviction callback (on a goroutine of
// its own): an evicted or expired token is no longer served. It is not a
// write of a fetch, so the generation stays: a fetch that started before
// still applies its outcome.
func (c *Cache) onTokenEvicted(_ context.Context, reason ttlcache.EvictionReason, item *ttlcache.Item[Key, *view]) {
	s := item.Value().s
	if reason == ttlcache.EvictionReasonCapacityReached {
		c.obs.Evicted(s.key)
	}
	s.mu.Lock()
	if s.tokItem == item {
		s.tokItem = nil
		if v := s.view.Load(); v.neg == nil {
			s.publish(&view{gen: v.gen})
		}
	}
	s.mu.Unlock()
	c.release(s)
}

// onNegativeEvicted is the negative index's eviction callback: a flood of
// cached errors evicts only cached errors.
func (c *Cache) onNegativeEvicted(_ context.Context, _ ttlcache.EvictionReason, item *ttlcache.Item[Key, *view]) {
	s := item.Value().s
	s.mu.Lock()
	if s.negItem == item {
		s.negItem = nil
		if v := s.view.Load(); v.neg != nil {
			s.publish(&view{gen: v.gen})
		}
	}
	s.mu.Unlock()
	c.release(s)
}

// noAhead is noAheadUntil while a refresh ahead runs.
const noAhead = math.MaxInt64
