// Package cache keeps one access token per (provider, tenant) and decides when
// to fetch a new one: the TTL from the token's lifetime, the safety margin,
// refresh-ahead while the current token is still served, brief negative
// entries for errors that retrying cannot fix, forced refreshes with a minimum
// interval, and the collapsing of concurrent misses into one fetch.
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
	"sync/atomic"
	"time"

	"github.com/jellydator/ttlcache/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
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
)

// Config configures a Cache. Only Source is required.
type Config struct {
	// Source fetches fresh tokens. Required.
	Source Source

	// Capacity bounds the number of entries; the least recently used entry is
	// evicted first. Zero means DefaultCapacity.
	Capacity int

	// RefreshAt is the fraction of a token's lifetime after which the next
	// request starts a refresh in the background while the current token keeps
	// being served. Zero means DefaultRefreshAt; it must be in (0, 1).
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

	// IsNegative reports whether an error may be cached for NegativeTTL.
	// Nil means no error is.
	IsNegative func(error) bool

	// MinRefreshInterval is the least time between two forced refreshes of
	// one key; a forced refresh inside it gets the token the previous forced
	// refresh fetched. Zero means no limit.
	MinRefreshInterval time.Duration

	// FetchTimeout bounds one shared fetch. Callers that give up do not cancel
	// it; this does. Zero means DefaultFetchTimeout.
	FetchTimeout time.Duration

	// MaxConcurrentFetches bounds how many Source fetches run at once, across
	// all keys, so that a flood of distinct tenants cannot hammer the
	// upstreams; further fetches wait for a slot within FetchTimeout. Zero
	// means no bound.
	MaxConcurrentFetches int

	// RefreshRetryDelay is how long a failed refresh-ahead waits before the
	// next request may start another one. Zero means DefaultRefreshRetryDelay.
	RefreshRetryDelay time.Duration

	// Now is the clock. Nil means time.Now.
	Now func() time.Time

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
// its background janitor.
type Cache struct {
	cfg   Config
	items *ttlcache.Cache[Key, *entry]
	group singleflight.Group
	obs   Observer
	done  chan struct{} // closed when the janitor goroutine returns

	// fetchSlots is a semaphore of MaxConcurrentFetches slots; nil when
	// unbounded.
	fetchSlots chan struct{}

	tracer  trace.Tracer
	entries metric.Registration // the entries gauge's callback; nil without metrics
}

// entry is the value stored per key. Its fields are set before it is stored
// and never changed, except the refresh-ahead bookkeeping, which is atomic.
type entry struct {
	token       Token
	usableUntil time.Time
	refreshAt   time.Time

	// err, when non-nil, makes this a negative entry valid until negUntil.
	err      error
	negUntil time.Time

	// forcedAt is when the last forced refresh of this key started; it is
	// carried over to later entries so the minimum interval holds across a
	// normal refresh in between.
	forcedAt time.Time

	// refreshing is true while a refresh-ahead for this entry runs.
	refreshing atomic.Bool
	// nextRefresh (unix nanoseconds) is the earliest time a refresh-ahead may
	// start again after one failed.
	nextRefresh atomic.Int64
}

// New builds a Cache and starts its janitor, which removes expired entries to
// free memory.
func New(cfg Config) (*Cache, error) {
	if cfg.Source == nil {
		return nil, errors.New("cache: Config.Source is required")
	}
	if cfg.Capacity < 0 {
		return nil, fmt.Errorf("cache: capacity must not be negative, got %d", cfg.Capacity)
	}
	if cfg.Capacity == 0 {
		cfg.Capacity = DefaultCapacity
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
		cfg: cfg,
		items: ttlcache.New(
			ttlcache.WithCapacity[Key, *entry](uint64(cfg.Capacity)),
			// Tokens expire at a fixed instant: a hit must not extend them.
			ttlcache.WithDisableTouchOnHit[Key, *entry](),
		),
		obs:    obs,
		done:   make(chan struct{}),
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
	c.items.OnEviction(func(_ context.Context, reason ttlcache.EvictionReason, item *ttlcache.Item[Key, *entry]) {
		if reason == ttlcache.EvictionReasonCapacityReached {
			c.obs.Evicted(item.Key())
		}
	})
	go func() {
		defer close(c.done)
		c.items.Start()
	}()
	return c, nil
}

// Close stops the janitor and waits for it to return. The cache must not be
// used afterwards.
func (c *Cache) Close() {
	if c.entries != nil {
		_ = c.entries.Unregister() // fails only if the provider is shut down
	}
	// ttlcache's Stop is a no-op until Start has begun, so a Close right after
	// New could leave the janitor running for ever: stop until it is gone.
	for {
		c.items.Stop()
		select {
		case <-c.done:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Len is the number of entries, including expired ones not yet removed.
func (c *Cache) Len() int { return c.items.Len() }

// Get returns a usable token for key: the cached one while it is outside its
// safety margin, else one fetched from the Source, with concurrent misses for
// the same key sharing one fetch. Past the refresh point it also starts a
// background refresh, once.
//
// If ctx ends before the token is there, Get returns an error wrapping
// ctx.Err(); the fetch goes on and its result is cached.
func (c *Cache) Get(ctx context.Context, key Key) (Token, error) {
	if item := c.items.Get(key); item != nil {
		e := item.Value()
		now := c.cfg.Now()
		if e.err != nil {
			if now.Before(e.negUntil) {
				c.obs.NegativeHit(key)
				tagRequest(ctx, resultNegativeHit)
				return Token{}, e.err
			}
		} else if now.Before(e.usableUntil) {
			return c.hit(ctx, key, e, now), nil
		}
	}
	c.obs.Miss(key)
	tagRequest(ctx, resultMiss)
	return c.wait(ctx, key, false)
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
	item := c.items.Get(key)
	if item == nil {
		return Token{}, false
	}
	e := item.Value()
	now := c.cfg.Now()
	if e.err != nil || !now.Before(e.usableUntil) {
		return Token{}, false
	}
	return c.hit(ctx, key, e, now), true
}

// hit serves e, a usable token, to a request: the refresh ahead of expiry
// once past the refresh point, the Observer, the caller's span.
func (c *Cache) hit(ctx context.Context, key Key, e *entry, now time.Time) Token {
	stale := !now.Before(e.refreshAt)
	if stale {
		c.refreshAhead(ctx, key, e, now)
	}
	c.obs.Hit(key, e.usableUntil.Sub(now), stale)
	if stale {
		tagRequest(ctx, resultStaleHit)
	} else {
		tagRequest(ctx, resultHit)
	}
	return e.token
}

// Refresh drops key's token and fetches a new one, for a caller whose token
// was refused. Concurrent forced refreshes of a key share one fetch, and at
// most one forced fetch per key starts per MinRefreshInterval: inside it, the
// token that the previous forced fetch obtained is returned.
func (c *Cache) Refresh(ctx context.Context, key Key) (Token, error) {
	if c.cfg.MinRefreshInterval > 0 {
		if item := c.items.Get(key); item != nil {
			e := item.Value()
			now := c.cfg.Now()
			if !e.forcedAt.IsZero() && now.Sub(e.forcedAt) < c.cfg.MinRefreshInterval {
				if e.err != nil && now.Before(e.negUntil) {
					c.obs.NegativeHit(key)
					tagRequest(ctx, resultNegativeHit)
					return Token{}, e.err
				}
				if e.err == nil && now.Before(e.usableUntil) {
					c.obs.ForcedRefreshLimited(key)
					tagRequest(ctx, resultRefreshLimited)
					return e.token, nil
				}
			}
		}
	}
	tagRequest(ctx, resultForced)
	return c.wait(ctx, key, true)
}

// flightKey names a key's fetch in the singleflight group. Forced refreshes
// have their own flight so that they never join an older fetch, whose token
// may be the very one the caller was refused with.
func flightKey(key Key, forced bool) string {
	prefix := "get\x00"
	if forced {
		prefix = "force\x00"
	}
	return prefix + key.Provider + "\x00" + key.Tenant
}

// wait joins or starts the fetch for key and waits for it or for ctx.
func (c *Cache) wait(ctx context.Context, key Key, forced bool) (Token, error) {
	leader := false
	ch := c.group.DoChan(flightKey(key, forced), func() (any, error) {
		leader = true
		trigger := triggerMiss
		if forced {
			trigger = triggerForced
		}
		return c.fetch(ctx, key, forced, trigger)
	})
	select {
	case r := <-ch:
		f, _ := r.Val.(flight)
		// The flight function ran before the result was sent, so reading
		// leader here is ordered after its write.
		if !leader {
			c.obs.Collapsed(key)
			noteCollapsed(ctx, f.span)
		}
		if r.Err != nil {
			return Token{}, r.Err
		}
		return f.tok, nil
	case <-ctx.Done():
		return Token{}, fmt.Errorf("waiting for the %s token of tenant %q: %w", key.Provider, key.Tenant, ctx.Err())
	}
}

// refreshAhead starts one background fetch for an entry past its refresh
// point, unless one runs or the last one failed too recently.
//
// The refresh belongs to no request: its span starts a new trace, linked to
// the request (ctx) that triggered it.
func (c *Cache) refreshAhead(ctx context.Context, key Key, e *entry, now time.Time) {
	if now.UnixNano() < e.nextRefresh.Load() || !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	c.obs.RefreshAhead(key)
	link := trace.LinkFromContext(ctx)
	go func() {
		// On success the entry is replaced and its flag never read again;
		// resetting it would let a request still holding the old entry
		// start a second, needless refresh.
		ch := c.group.DoChan(flightKey(key, false), func() (any, error) {
			return c.fetch(context.Background(), key, false, triggerRefreshAhead, link)
		})
		if r := <-ch; r.Err != nil {
			e.nextRefresh.Store(c.cfg.Now().Add(c.cfg.RefreshRetryDelay).UnixNano())
			e.refreshing.Store(false)
			c.cfg.Logger.Warn("token refresh ahead of expiry failed; serving the current token until its safety margin",
				"provider", key.Provider, "tenant", key.Tenant,
				"usable_until", e.usableUntil, "error", r.Err.Error())
		}
	}()
}

// flight is the result of one shared fetch.
type flight struct {
	tok Token
	// span is the fetch's span, which collapsed callers link to.
	span trace.SpanContext
}

// fetch runs one Source fetch as the singleflight leader and stores its
// outcome. Its context is detached from the caller that happened to lead, so
// that the caller giving up does not fail everyone else, but it keeps the
// caller's values (trace context: its span is the parent of the fetch's) and
// has its own timeout. trigger (miss, forced, ahead) and links go to the span.
func (c *Cache) fetch(parent context.Context, key Key, forced bool, trigger string, links ...trace.Link) (f flight, err error) {
	ctx, span := c.tracer.Start(context.WithoutCancel(parent), "cache.fetch",
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("token_sidecar.provider", key.Provider),
			attribute.String("token_sidecar.tenant", key.Tenant),
			attribute.String("token_sidecar.cache.trigger", trigger),
		))
	f.span = span.SpanContext()
	defer func() {
		// A panic inside a singleflight DoChan function kills the process.
		if p := recover(); p != nil {
			c.cfg.Logger.ErrorContext(ctx, "token source panicked", "provider", key.Provider, "tenant", key.Tenant, "panic", fmt.Sprint(p))
			f.tok, err = Token{}, fmt.Errorf("cache: token source panicked for tenant %q", key.Tenant)
		}
		if err != nil {
			// Error texts of the Source are free of secrets (upstream's
			// contract); the tenant and provider are not secret.
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()

	started := c.cfg.Now()
	var prev *entry
	if item := c.items.Get(key); item != nil {
		prev = item.Value()
	}
	if trigger == triggerMiss && prev != nil {
		// The caller missed, but a flight that ended between its look-up and
		// its DoChan may have stored an answer since: use that rather than
		// fetch a second time.
		if prev.err == nil && started.Before(prev.usableUntil) {
			f.tok = prev.token
			return f, nil
		}
		if prev.err != nil && started.Before(prev.negUntil) {
			return f, prev.err
		}
	}
	forcedAt := time.Time{}
	if prev != nil {
		forcedAt = prev.forcedAt
	}
	if forced {
		forcedAt = started
		c.obs.ForcedRefresh(key)
	}

	if c.fetchSlots != nil {
		select {
		case c.fetchSlots <- struct{}{}:
			defer func() { <-c.fetchSlots }()
		case <-ctx.Done():
			return f, fmt.Errorf("cache: all %d fetch slots stayed busy for tenant %q: %w", cap(c.fetchSlots), key.Tenant, ctx.Err())
		}
	}
	req := FetchRequest{Key: key, Reason: reasonOf(trigger)}
	if prev != nil && prev.err == nil {
		req.Current = prev.token
		if forced {
			req.Refused = prev.token.AccessToken
		}
	}
	tok, err := c.cfg.Source.Fetch(ctx, req)
	now := c.cfg.Now()
	if err == nil && !now.Before(tok.UsableUntil()) {
		// Already inside its safety margin (a lifetime shorter than the
		// fetch took): serving it would break the margin's promise.
		err = &ExpiredTokenError{Provider: key.Provider, Tenant: key.Tenant, Lifetime: tok.Lifetime}
	}
	if err != nil {
		c.storeError(key, err, prev, forced, forcedAt, now)
		return f, err
	}
	c.storeToken(key, tok, forcedAt, now)
	f.tok = tok
	return f, nil
}

// reasonOf maps a fetch's trigger to the Reason a Source is told.
func reasonOf(trigger string) Reason {
	switch trigger {
	case triggerRefreshAhead:
		return ReasonAhead
	case triggerForced:
		return ReasonForced
	default:
		return ReasonMiss
	}
}

// ExpiredTokenError reports a freshly fetched token that was already inside
// its safety margin when it arrived. Its code is the contract's
// UPSTREAM_INVALID_RESPONSE: the upstream granted a lifetime too short to
// use.
type ExpiredTokenError struct {
	Provider, Tenant string
	Lifetime         time.Duration
}

func (e *ExpiredTokenError) Error() string {
	return fmt.Sprintf("cache: the %s token fetched for tenant %q (lifetime %s) was inside its safety margin on arrival",
		e.Provider, e.Tenant, e.Lifetime)
}

// ErrorCode is read by the HTTP layer through a one-method interface.
func (e *ExpiredTokenError) ErrorCode() string { return "UPSTREAM_INVALID_RESPONSE" }

// storeToken caches tok, which fetch has checked is outside its safety
// margin (ttlcache would keep a TTL ≤ 0 for ever).
func (c *Cache) storeToken(key Key, tok Token, forcedAt, now time.Time) {
	e := &entry{token: tok, usableUntil: tok.UsableUntil(), forcedAt: forcedAt}
	ttl := e.usableUntil.Sub(now)
	issued := tok.ExpiresAt.Add(-tok.Lifetime)
	fraction := c.cfg.RefreshAt - c.cfg.RefreshJitter*c.cfg.Rand()
	e.refreshAt = issued.Add(time.Duration(fraction * float64(tok.Lifetime)))
	c.items.Set(key, e, ttl)
}

// storeError remembers err briefly if it is one that retrying cannot fix. A
// failed refresh ahead of expiry never takes away a token that can still be
// served; a failed forced refresh does: the caller was refused with it.
func (c *Cache) storeError(key Key, err error, prev *entry, forced bool, forcedAt, now time.Time) {
	if !forced && prev != nil && prev.err == nil && now.Before(prev.usableUntil) {
		return
	}
	if c.cfg.NegativeTTL > 0 && c.cfg.IsNegative != nil && c.cfg.IsNegative(err) {
		c.items.Set(key, &entry{err: err, negUntil: now.Add(c.cfg.NegativeTTL), forcedAt: forcedAt}, c.cfg.NegativeTTL)
		return
	}
	if forced {
		c.items.Delete(key)
	}
}
