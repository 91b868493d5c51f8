// Package cache keeps one state record per (provider, tenant) and decides
// when to fetch a new token: the TTL from the token's lifetime, the safety
// margin, refresh ahead while the current token is still served (on a
// request or on its own timer), brief negative entries for errors that
// retrying cannot fix, forced refreshes that know the refused token and hold
// a minimum interval, the collapsing of concurrent fetches into one, and the
// ordering of their writes.
//
// Files: cache.go the API and the hit path; state.go the record and its
// transitions; flight.go a shared fetch and how its outcome is applied;
// forced.go forced refreshes; schedule.go the refresh schedule (pure);
// scheduler.go the timer that refreshes tokens in use.
//
// It knows nothing of HTTP and of where tokens come from: callers pass a
// Source. It must not import proxy, upstream or cmd. Its metrics and spans
// go to the providers in Config, never to OpenTelemetry's globals.
package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jellydator/ttlcache/v3"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/singleflight"
)

// Defaults for the zero values of Config.
const (
	DefaultCapacity          = 10000
	DefaultRefreshAt         = 0.8
	DefaultRefreshJitter     = 0.05
	DefaultFetchTimeout      = 60 * time.Second
	DefaultRefreshRetryDelay = 5 * time.Second
	DefaultNegativeCapacity  = 1000
)

// Config configures a Cache. Only Source is required.
type Config struct {
	// Source fetches fresh tokens. Required.
	Source Source

	// Capacity bounds the number of cached tokens; the least recently used
	// is evicted first. Zero means DefaultCapacity.
	Capacity int

	// NegativeCapacity bounds the number of cached errors, apart from the
	// tokens, so that a flood of unknown tenants never evicts a token; the
	// least recently used is evicted first. Zero means
	// DefaultNegativeCapacity.
	NegativeCapacity int

	// RefreshAt is the fraction of a token's lifetime after which a refresh
	// starts in the background — on the next request, or on the cache's own
	// timer for a token served since it was fetched — while the current token
	// keeps being served. It is clamped to 90 % of the way to the safety
	// margin. Zero means DefaultRefreshAt; it must be in (0, 1).
	RefreshAt float64

	// RefreshJitter moves each token's refresh point earlier by a random
	// fraction of its lifetime in [0, RefreshJitter), so that many pods that
	// fetched at the same moment do not refresh together. Zero means
	// DefaultRefreshJitter; negative means no jitter.
	RefreshJitter float64

	// NegativeTTL is how long an error for which IsNegative reports true is
	// remembered, so that a misconfigured app cannot hammer the upstreams.
	// Zero means errors are never cached.
	NegativeTTL time.Duration

	// IsNegative reports whether an error is terminal, one that retrying
	// cannot fix: it may be cached for NegativeTTL, and a forced refresh
	// failing with it drops the refused token (a transient failure keeps it).
	// Nil means no error is.
	IsNegative func(error) bool

	// MinRefreshInterval is the least time between two forced exchanges of
	// one key; a forced refresh inside it gets the answer of the previous
	// forced exchange (see Refresh). Zero means no limit.
	MinRefreshInterval time.Duration

	// FetchTimeout bounds the wait of a shared fetch for a slot, and then the
	// Source's fetch: callers that give up do not cancel it; this does, and
	// every caller then gets an *UnavailableError. Set it to the longest the
	// Source can take with all its retries. Zero means DefaultFetchTimeout.
	FetchTimeout time.Duration

	// MaxConcurrentFetches bounds how many Source fetches run at once, across
	// all keys, so that a flood of distinct tenants cannot hammer the
	// upstreams; further fetches wait for a slot within FetchTimeout. Zero
	// means no bound.
	MaxConcurrentFetches int

	// RefreshRetryDelay is the longest a failed refresh ahead waits before
	// it is tried again (by the timer, or by a request): this or a quarter
	// of the time left before the margin, whichever is shorter, at least 1 s.
	// Zero means DefaultRefreshRetryDelay.
	RefreshRetryDelay time.Duration

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

	// AfterFunc calls f once Now has passed d from now, on a goroutine of its
	// own, and returns a function that stops that call (reporting whether it
	// did): the timer of the background refreshes, on the clock of Now. Nil
	// means time.AfterFunc. Set it with Now.
	AfterFunc func(d time.Duration, f func()) (stop func() bool)

	// Rand returns a number in [0, 1) for the refresh jitter. Nil means
	// math/rand/v2.Float64.
	Rand func() float64

	// Logger receives refresh failures and recovered panics. Nil discards.
	Logger *slog.Logger

	// Observer is told about cache events, e.g. to count them in metrics.
	// Nil means no one is. It is told in addition to the metrics of
	// MeterProvider.
	Observer Observer

	// MeterProvider receives the cache's metrics: hits, misses, stale hits,
	// negative hits, collapsed requests, refreshes, evictions, the number of
	// entries and the remaining lifetime of served tokens. Nil means no
	// metrics.
	MeterProvider metric.MeterProvider

	// MetricsTenantLabel adds the tenant ID as a label to the cache's
	// counters (never to a histogram). False, the zero value, keeps metric
	// cardinality independent of the number of tenants.
	MetricsTenantLabel bool

	// TracerProvider traces each shared fetch as a span "cache.fetch", a
	// child of the request that started it (or, for a refresh ahead of
	// expiry, a new trace linked to that request). Nil means no spans.
	TracerProvider trace.TracerProvider
}

// Cache is a per-key token cache. It is safe for concurrent use. Close stops
// its janitors, its timer and its background refreshes.
type Cache struct {
	cfg Config
	obs Observer
	// clk reads cfg.Now as the instants that views and states keep.
	clk instants

	// mu guards states, the registry of every live state record. Lock
	// order: mu, then a state's mu.
	mu     sync.Mutex
	states map[Key]*state

	// tokens and negatives index the views of the states that hold a token,
	// and a cached error, each with its own bound; the hit path reads tokens
	// only, and the view it finds there, not the state.
	tokens    *ttlcache.Cache[Key, *view]
	negatives *ttlcache.Cache[Key, *view]
	janitors  sync.WaitGroup

	group singleflight.Group
	sched *scheduler

	// bg is the cancellation of every fetch (see detach); cancelled by
	// Close.
	bg     context.Context
	stopBG context.CancelFunc
	bgWG   sync.WaitGroup

	// fetchSlots is a semaphore of MaxConcurrentFetches slots; nil when
	// unbounded.
	fetchSlots chan struct{}

	tracer    trace.Tracer
	entries   metric.Registration // the entries gauge's callback; nil without metrics
	closeOnce sync.Once
}

// New builds a Cache and starts its janitors (which remove expired entries
// to free memory) and its timer.
func New(cfg Config) (*Cache, error) {
	if cfg.Source == nil {
		return nil, errors.New("cache: Config.Source is required")
	}
	if cfg.Capacity < 0 || cfg.NegativeCapacity < 0 {
		return nil, fmt.Errorf("cache: capacities must not be negative, got %d and %d", cfg.Capacity, cfg.NegativeCapacity)
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = DefaultCapacity
	}
	if cfg.NegativeCapacity == 0 {
		cfg.NegativeCapacity = DefaultNegativeCapacity
	}
	if cfg.RefreshAt == 0 {
		cfg.RefreshAt = DefaultRefreshAt
	}
	if cfg.RefreshAt <= 0 || cfg.RefreshAt >= 1 {
		return nil, fmt.Errorf("cache: refresh-at must be between 0 and 1, got %v", cfg.RefreshAt)
	}
	if cfg.RefreshJitter == 0 {
		cfg.RefreshJitter = DefaultRefreshJitter
	}
	if cfg.RefreshJitter < 0 {
		cfg.RefreshJitter = 0
	}
	if cfg.RefreshJitter >= cfg.RefreshAt {
		return nil, fmt.Errorf("cache: refresh jitter %v must be smaller than refresh-at %v", cfg.RefreshJitter, cfg.RefreshAt)
	}
	if cfg.MaxConcurrentFetches < 0 {
		return nil, fmt.Errorf("cache: MaxConcurrentFetches must not be negative, got %d", cfg.MaxConcurrentFetches)
	}
	if cfg.NegativeTTL < 0 || cfg.MinRefreshInterval < 0 || cfg.FetchTimeout < 0 || cfg.RefreshRetryDelay < 0 {
		return nil, errors.New("cache: durations must not be negative")
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.RefreshRetryDelay == 0 {
		cfg.RefreshRetryDelay = DefaultRefreshRetryDelay
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AfterFunc == nil {
		cfg.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var obs Observer = nopObserver{}
	var metrics *metricsObserver
	var meter metric.Meter
	if cfg.MeterProvider != nil {
		meter = cfg.MeterProvider.Meter(instrumentationName)
		m, err := newMetricsObserver(meter, cfg.MetricsTenantLabel)
		if err != nil {
			return nil, err
		}
		metrics = m
	}
	switch {
	case metrics != nil && cfg.Observer != nil:
		obs = observers{metrics, cfg.Observer}
	case metrics != nil:
		obs = metrics
	case cfg.Observer != nil:
		obs = cfg.Observer
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}
	c := &Cache{
		cfg:    cfg,
		obs:    obs,
		clk:    newInstants(cfg.Now),
		states: map[Key]*state{},
		tokens: ttlcache.New(
			ttlcache.WithCapacity[Key, *view](uint64(cfg.Capacity)),
			// Tokens expire at a fixed instant: a hit must not extend them.
			ttlcache.WithDisableTouchOnHit[Key, *view](),
		),
		negatives: ttlcache.New(
			ttlcache.WithCapacity[Key, *view](uint64(cfg.NegativeCapacity)),
			ttlcache.WithDisableTouchOnHit[Key, *view](),
		),
		tracer: tp.Tracer(instrumentationName),
	}
	if cfg.MaxConcurrentFetches > 0 {
		c.fetchSlots = make(chan struct{}, cfg.MaxConcurrentFetches)
	}
	if meter != nil {
		gauge, err := meter.Int64ObservableGauge("token_sidecar.cache.entries",
			metric.WithUnit("{entry}"),
			metric.WithDescription("Cache entries (tokens and cached errors), including expired ones not yet removed."))
		if err != nil {
			return nil, fmt.Errorf("cache: creating instruments: %w", err)
		}
		c.entries, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			o.ObserveInt64(gauge, int64(c.Len()))
			return nil
		}, gauge)
		if err != nil {
			return nil, fmt.Errorf("cache: registering the entries gauge: %w", err)
		}
	}
	c.tokens.OnEviction(c.onTokenEvicted)
	c.negatives.OnEviction(c.onNegativeEvicted)
	c.bg, c.stopBG = context.WithCancel(context.Background())
	c.sched = newScheduler(c.clk, cfg.AfterFunc, c.tick)
	for _, idx := range []*ttlcache.Cache[Key, *view]{c.tokens, c.negatives} {
		c.janitors.Go(idx.Start)
	}
	return c, nil
}

// Close stops the timer, cancels every fetch still running (their callers
// get an error), waits for the background refreshes, and stops the
// janitors. The cache must not be used afterwards.
func (c *Cache) Close() {
	c.closeOnce.Do(func() {
		if c.entries != nil {
			_ = c.entries.Unregister() // fails only if the provider is shut down
		}
		c.stopBG()
		c.sched.close()
		c.bgWG.Wait()
		// ttlcache's Stop is a no-op until Start has begun, so a Close right
		// after New could leave a janitor running for ever: stop until both
		// are gone.
		done := make(chan struct{})
		go func() { c.janitors.Wait(); close(done) }()
		for {
			c.tokens.Stop()
			c.negatives.Stop()
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
}

// Len is the number of cached tokens and errors, including expired ones not
// yet removed.
func (c *Cache) Len() int { return c.tokens.Len() + c.negatives.Len() }

// Get returns a usable token for key: the cached one while it is outside its
// safety margin, else one fetched from the Source, with concurrent misses for
// the same key sharing one fetch. Past the refresh point it also starts a
// background refresh, once.
//
// If ctx ends before the token is there, Get returns an error wrapping
// ctx.Err(); the fetch goes on and its result is cached.
func (c *Cache) Get(ctx context.Context, key Key) (Token, error) {
	if item := c.tokens.Get(key); item != nil {
		v := item.Value()
		if now := c.cfg.Now(); v.usable(c.clk.on(now, v.wall)) {
			return c.hit(ctx, key, v, now), nil
		}
	}
	if item := c.negatives.Get(key); item != nil {
		if err := item.Value().cachedErr(c.clk.of(c.cfg.Now())); err != nil {
			c.obs.NegativeHit(key)
			tagRequest(ctx, resultNegativeHit)
			return Token{}, err
		}
	}
	c.obs.Miss(key)
	tagRequest(ctx, resultMiss)
	return c.miss(ctx, key, true)
}

// Warm fetches key's token unless one is cached, as a miss of Get would,
// without counting it as served: a token nobody asks for is not refreshed
// ahead by the timer. It returns nil once the token is cached, or the
// fetch's error (or ctx's).
func (c *Cache) Warm(ctx context.Context, key Key) error {
	_, err := c.miss(ctx, key, false)
	return err
}

// miss joins or starts key's normal flight, unless a flight that ended
// since the caller looked stored an answer: that is used instead. serve
// marks the token served to a caller.
func (c *Cache) miss(ctx context.Context, key Key, serve bool) (Token, error) {
	s := c.lockState(key)
	now := c.cfg.Now()
	v := s.view.Load()
	switch {
	case c.servable(s, v, now):
		// A flight that ended since the caller looked stored it: the caller
		// got what another caller's fetch brought.
		s.mu.Unlock()
		c.obs.Collapsed(key)
		if serve {
			v.markServed()
		}
		return v.tok, nil
	case v.cachedErr(c.clk.of(now)) != nil:
		s.mu.Unlock()
		return Token{}, v.neg.err
	}
	leader := !s.normalRunning
	var ch <-chan singleflight.Result
	if leader {
		req := FetchRequest{Key: key, Reason: ReasonMiss, Current: v.tok}
		ch = c.startFlight(s, flightNormal, req, c.detach(ctx), triggerMiss)
	} else {
		ch = c.joinFlight(s, flightNormal)
	}
	s.mu.Unlock()
	tok, err := c.await(ctx, key, ch, leader)
	if serve {
		return c.served(s, tok, err)
	}
	return tok, err
}

// Cached is Get's hit path alone: it returns key's cached token while it is
// outside its safety margin, with the same effects as a hit of Get (the
// refresh ahead of expiry past the refresh point, the Observer's Hit, the
// caller's span tagged), and never waits. On anything else — no entry, an
// expired token, a cached error — it returns false and does nothing: the
// caller then calls Get, which counts the miss or the negative hit.
//
// It lets a caller skip what it prepares only for a wait (a deadline on
// ctx) when the token is there. ctx is read only for its span.
func (c *Cache) Cached(ctx context.Context, key Key) (Token, bool) {
	item := c.tokens.Get(key)
	if item == nil {
		return Token{}, false
	}
	v := item.Value()
	now := c.cfg.Now()
	if !v.usable(c.clk.on(now, v.wall)) {
		return Token{}, false
	}
	return c.hit(ctx, key, v, now), true
}

// hit serves v, key's usable token, to a request: marked served, the
// refresh ahead of expiry once past the refresh point, the Observer, the
// caller's span. Only past the refresh point does it read v's state.
func (c *Cache) hit(ctx context.Context, key Key, v *view, t time.Time) Token {
	v.markServed()
	now := c.clk.on(t, v.wall)
	stale := now >= v.refreshAt
	if stale && int64(now) >= v.s.noAheadUntil.Load() {
		c.requestAhead(ctx, v.s, v, t)
	}
	c.obs.Hit(key, time.Duration(v.usableUntil-now), stale)
	if stale {
		tagRequest(ctx, resultStaleHit)
	} else {
		tagRequest(ctx, resultHit)
	}
	return v.tok
}
