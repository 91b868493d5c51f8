package sharedcache

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/token-sidecar/token-sidecar/cache"
)

// Source is a cache.Source that shares tokens with the other sidecars of the
// fleet through Redis, in front of an inner Source that fetches from the
// upstreams. It is safe for concurrent use. Close releases its connections
// and stops its key-file watcher.
type Source struct {
	cfg     Config
	store   *store
	notes   *notifier
	ring    atomic.Pointer[keyring]
	metrics *metrics
	tracer  trace.Tracer
	logger  *slog.Logger

	stop chan struct{}
	// stopNotes ends the notifier's subscription.
	stopNotes context.CancelFunc
	wg        sync.WaitGroup
}

// New builds a Source from cfg. It does not wait for the server: a server
// down at start is a server down, which Fetch copes with. Errors never quote
// the URL, which may hold a password.
func New(cfg Config) (*Source, error) {
	if cfg.Inner == nil {
		return nil, errors.New("sharedcache: Config.Inner is required")
	}
	if cfg.URL == "" {
		return nil, errors.New("sharedcache: a server URL is required")
	}
	if err := CheckURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("sharedcache: server URL: %w", err)
	}
	opts, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, errors.New("sharedcache: server URL: not a valid redis:// or rediss:// URL")
	}
	if cfg.KeyFile == "" {
		return nil, errors.New("sharedcache: a key file is required with a server URL")
	}
	data, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("sharedcache: %w", err)
	}
	ring, err := parseKeys(data)
	if err != nil {
		return nil, fmt.Errorf("sharedcache: %s: %w", cfg.KeyFile, err)
	}
	if cfg.Timeout < 0 || cfg.Lease < 0 || cfg.MinRefreshInterval < 0 || cfg.KeyPollInterval < 0 || cfg.BreakerDelay < 0 || cfg.BreakerFailures < 0 {
		return nil, errors.New("sharedcache: durations and counts must not be negative")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Lease < 3*cfg.Timeout {
		return nil, fmt.Errorf("sharedcache: the lease (%v) must be at least three command timeouts (%v): its holder renews it every third", cfg.Lease, 3*cfg.Timeout)
	}
	if cfg.KeyPollInterval == 0 {
		cfg.KeyPollInterval = DefaultKeyPollInterval
	}
	if cfg.BreakerFailures == 0 {
		cfg.BreakerFailures = DefaultBreakerFailures
	}
	if cfg.BreakerDelay == 0 {
		cfg.BreakerDelay = DefaultBreakerDelay
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tp := cfg.TracerProvider
	if tp == nil {
		tp = tracenoop.NewTracerProvider()
	}

	// Every wait is bounded by the one timeout, and nothing is retried
	// inside the client: a slow server costs one timeout per round trip,
	// and the breaker stops even that.
	opts.DialTimeout = cfg.Timeout
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.PoolTimeout = cfg.Timeout
	opts.DialerRetries = 1
	if opts.PoolSize == 0 { // not set by the URL's pool_size
		// Enough for the cache's default 64 concurrent fetches to rarely
		// wait for a connection (go-redis's default is 10 per CPU).
		opts.PoolSize = DefaultPoolSize
	}
	if opts.MinIdleConns == 0 { // not set by the URL's min_idle_conns
		// Dialled at start, in the background: a pod of a rollout gets its
		// first burst of misses at once, which then need not all wait for
		// dials under the 200 ms timeout.
		opts.MinIdleConns = DefaultMinIdleConns
	}
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	opts.DisableIdentity = true // CLIENT SETINFO is Redis 7.2+; we support 6+
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

	s := &Source{
		cfg:    cfg,
		tracer: tp.Tracer(instrumentationName),
		logger: cfg.Logger.With("shared_cache_server", opts.Addr),
		stop:   make(chan struct{}),
	}
	s.ring.Store(ring)
	st := &store{
		rdb:     redis.NewClient(opts),
		server:  opts.Addr,
		timeout: cfg.Timeout,
		tracer:  s.tracer,
	}
	st.breaker = circuitbreaker.NewBuilder[any]().
		WithFailureThresholdRatio(uint(cfg.BreakerFailures), uint(2*cfg.BreakerFailures)).
		WithDelay(cfg.BreakerDelay).
		WithSuccessThreshold(1).
		OnStateChanged(s.breakerChanged).
		Build()
	s.metrics, err = newMetrics(cfg.MeterProvider, st.breaker.State)
	if err != nil {
		st.rdb.Close()
		return nil, err
	}
	st.metrics = s.metrics
	s.store = st

	s.notes = newNotifier(st.rdb, cfg.Prefix+"released", cfg.Timeout, st.breaker.IsOpen)
	var notesCtx context.Context
	notesCtx, s.stopNotes = context.WithCancel(context.Background())

	sum := sha256.Sum256(data)
	s.wg.Add(3)
	go s.watchKeys(sum)
	go s.greet()
	go func() {
		defer s.wg.Done()
		s.notes.run(notesCtx)
	}()
	return s, nil
}

// Server is the server's host:port, for logs; never its password.
func (s *Source) Server() string { return s.store.server }

// Close stops the key-file watcher and closes the connections. Fetches still
// running fall back to the inner Source.
func (s *Source) Close() error {
	close(s.stop)
	s.stopNotes()
	s.wg.Wait()
	if s.metrics.reg != nil {
		_ = s.metrics.reg.Unregister()
	}
	return s.store.rdb.Close()
}

// greet tells the log whether the server answers at start. Nothing waits
// for it: readiness does not depend on the shared cache.
func (s *Source) greet() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := s.store.do(ctx, "PING", func(ctx context.Context) error { return s.store.rdb.Ping(ctx).Err() })
	if err != nil {
		s.logger.Warn("shared cache not reachable at start; fetching from the upstreams directly until it is", "error", err.Error())
		return
	}
	s.logger.Info("shared cache reachable", "prefix", s.cfg.Prefix)
}

func (s *Source) breakerChanged(e circuitbreaker.StateChangedEvent) {
	switch e.NewState {
	case circuitbreaker.OpenState:
		s.logger.Warn("shared cache failing; fetching from the upstreams directly",
			"breaker", "open", "retry_in", s.cfg.BreakerDelay.String())
	case circuitbreaker.ClosedState:
		s.logger.Info("shared cache answering again", "breaker", "closed")
	}
}

// names are the server-side names of one key: its entry under each key of
// the ring (the first is where it is written), its lease and its
// forced-refresh marker (under the first key only).
type names struct {
	entries       []string
	lease, marker string
}

func (s *Source) namesOf(ring *keyring, key cache.Key) names {
	n := names{entries: make([]string, len(ring.keys))}
	for i := range ring.keys {
		h := ring.name(i, key)
		n.entries[i] = s.cfg.Prefix + "t:" + h
		if i == 0 {
			n.lease = s.cfg.Prefix + "l:" + h
			n.marker = s.cfg.Prefix + "f:" + h
		}
	}
	return n
}

// Fetch implements cache.Source: it answers a token another sidecar
// fetched when one suits req, else fetches through the inner Source under
// the fleet's lease (or waits for the sidecar that holds it) and shares the
// result. Whenever the shared cache fails it calls the inner Source
// directly.
func (s *Source) Fetch(ctx context.Context, req cache.FetchRequest) (cache.Token, error) {
	ctx, span := s.tracer.Start(ctx, "sharedcache.fetch",
		trace.WithAttributes(attribute.String("token_sidecar.cache.reason", req.Reason.String())))
	defer span.End()
	tok, result, err := s.fetch(ctx, req)
	span.SetAttributes(attribute.String("token_sidecar.shared_cache.result", result))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	return tok, err
}

// Fetch results, for the span.
const (
	resultAdopted  = "adopted"  // another sidecar's token
	resultFetched  = "fetched"  // fetched under the lease and shared
	resultFallback = "fallback" // fetched directly: the shared cache failed
	resultLimited  = "limited"  // forced refresh inside the fleet's interval
)

func (s *Source) fetch(ctx context.Context, req cache.FetchRequest) (cache.Token, string, error) {
	ring := s.ring.Load()
	n := s.namesOf(ring, req.Key)
	vals, err := s.store.get(ctx, n.entries)
	if err != nil {
		s.metrics.lookup(ctx, lookupError)
		return s.direct(ctx, req, err)
	}
	e, found := s.open(ctx, ring, req.Key, vals, true)
	if found && s.accepts(req, e) {
		return s.adopt(ctx, req, e)
	}
	return s.leased(ctx, req, ring, n)
}

// accepts reports whether e answers req: a token usable now that is, for a
// refresh ahead, newer than the one the cache holds, and for a forced
// refresh, not the refused one.
func (s *Source) accepts(req cache.FetchRequest, e sharedEntry) bool {
	if !s.cfg.Now().Before(e.token.UsableUntil()) {
		return false
	}
	switch req.Reason {
	case cache.ReasonAhead:
		return e.token.ExpiresAt.After(req.Current.ExpiresAt)
	case cache.ReasonForced:
		return e.token.AccessToken != req.Refused
	default:
		return true
	}
}

func (s *Source) adopt(ctx context.Context, req cache.FetchRequest, e sharedEntry) (cache.Token, string, error) {
	s.metrics.adopted(ctx, req.Reason.String())
	return e.token, resultAdopted, nil
}

// open returns, of vals (one per ring key), the entry of key that opens and
// expires last: while pods disagree on the first key (a rotation rolling
// out) each writes under its own first key's name, and the newer token may
// be under either. With count, it counts the look-up's outcome.
func (s *Source) open(ctx context.Context, ring *keyring, key cache.Key, vals [][]byte, count bool) (sharedEntry, bool) {
	var best sharedEntry
	present, found := false, false
	for _, v := range vals {
		if v == nil {
			continue
		}
		present = true
		pt, err := ring.open(key, v)
		if err != nil {
			continue
		}
		e, err := unmarshalEntry(pt)
		if err != nil {
			continue
		}
		if !found || e.token.ExpiresAt.After(best.token.ExpiresAt) {
			best, found = e, true
		}
	}
	if count {
		switch {
		case found && s.cfg.Now().Before(best.token.UsableUntil()):
			s.metrics.lookup(ctx, lookupHit)
		case found || !present:
			s.metrics.lookup(ctx, lookupMiss)
		default:
			s.metrics.lookup(ctx, lookupUndecryptable)
		}
	}
	return best, found
}

// errStuckLease reports a lease without expiry, which no sidecar sets: the
// server holds garbage that would make everyone wait for ever.
var errStuckLease = errors.New("sharedcache: the fetch lease has no expiry")

// errWaitedTooLong: the lease holder has not written a token while this
// fetch could still afford to wait (Config.InnerBudget left): it fetches on
// its own rather than fail a request that fetching would answer.
var errWaitedTooLong = errors.New("sharedcache: the lease holder took longer than this sidecar can wait")

// direct fetches from the inner Source as if there were no shared cache,
// because of cause.
func (s *Source) direct(ctx context.Context, req cache.FetchRequest, cause error) (cache.Token, string, error) {
	label := fallbackError
	switch {
	case errors.Is(cause, errBreakerOpen):
		label = fallbackBreakerOpen
	case errors.Is(cause, errStuckLease):
		label = fallbackStuckLease
	}
	s.metrics.fallback(ctx, label)
	s.logger.DebugContext(ctx, "shared cache failed; fetching from the upstreams directly", "error", cause.Error())
	tok, err := s.cfg.Inner.Fetch(ctx, req)
	return tok, resultFallback, err
}

// leased takes key's lease and fetches, or, while another sidecar holds it,
// waits for the token it shares; if that sidecar ends without one (failed,
// or died and its lease ran out) this one takes the lease over.
func (s *Source) leased(ctx context.Context, req cache.FetchRequest, ring *keyring, n names) (cache.Token, string, error) {
	owner := newOwner()
	waited := false
	for {
		got, err := s.store.acquire(ctx, n.lease, owner, s.cfg.Lease)
		if err != nil {
			return s.direct(ctx, req, err)
		}
		if got {
			if waited {
				s.metrics.lease(ctx, leaseTakenOver)
			} else {
				s.metrics.lease(ctx, leaseAcquired)
			}
			return s.hold(ctx, req, ring, n, owner)
		}
		if !waited {
			s.metrics.lease(ctx, leaseWaited)
			waited = true
		}
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if d, ok := ctx.Deadline(); ok && s.cfg.InnerBudget > 0 {
			wctx, cancel = context.WithDeadline(ctx, d.Add(-s.cfg.InnerBudget))
		}
		e, ok, err := s.waitFor(wctx, req, ring, n)
		// Read before cancel, which would end wctx whatever happened.
		waitedOut := errors.Is(wctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		switch {
		case ok:
			return s.adopt(ctx, req, e)
		case waitedOut:
			// Waited as long as this pod can afford: fetch on its own, with
			// the whole budget the upstreams may need.
			return s.direct(ctx, req, errWaitedTooLong)
		case ctx.Err() != nil:
			return cache.Token{}, resultFallback, fmt.Errorf("waiting for another sidecar's fetch of the %s token of tenant %q: %w", req.Key.Provider, req.Key.Tenant, ctx.Err())
		case err != nil:
			return s.direct(ctx, req, err)
		}
	}
}

// Polling while another sidecar holds the lease: the first look after
// the first delay, then doubling up to the cap, each ±25 %. While the
// notifier is subscribed the holder's release wakes the waiter at once, and
// polling only covers a lost message or a dead holder (whose lease runs out
// silently); while it is not, polling is all there is. bench/README.md
// ("Shared cache: waiting for the lease holder") has the measurements.
const (
	notifiedPollFirst = 100 * time.Millisecond
	notifiedPollMax   = time.Second
	pollFirst         = 5 * time.Millisecond
	pollMax           = 100 * time.Millisecond
)

// waitFor waits until an entry that answers req appears (true), the lease
// is free (false), or ctx ends.
func (s *Source) waitFor(ctx context.Context, req cache.FetchRequest, ring *keyring, n names) (sharedEntry, bool, error) {
	first, most := pollFirst, pollMax
	if s.notes.live.Load() {
		first, most = notifiedPollFirst, notifiedPollMax
	}
	delay := first
	for {
		// Registered before the look, so that a release between the two
		// is not missed.
		woken, done := s.notes.wait(n.lease)
		vals, ttl, err := s.store.poll(ctx, n.entries, n.lease)
		if err != nil {
			done()
			return sharedEntry{}, false, err
		}
		if e, found := s.open(ctx, ring, req.Key, vals, false); found && s.accepts(req, e) {
			done()
			return e, true, nil
		}
		switch ttl {
		case -2: // no lease
			done()
			return sharedEntry{}, false, nil
		case -1:
			done()
			return sharedEntry{}, false, errStuckLease
		}
		if ttl > s.cfg.Lease+s.cfg.Timeout { // no sidecar sets a longer one
			done()
			return sharedEntry{}, false, errStuckLease
		}
		t := time.NewTimer(jitter(delay))
		select {
		case <-ctx.Done():
		case <-woken:
		case <-t.C:
		}
		t.Stop()
		done()
		if ctx.Err() != nil {
			return sharedEntry{}, false, ctx.Err()
		}
		delay = min(2*delay, most)
	}
}

// hold fetches under the lease owner holds, shares the token and releases
// the lease.
func (s *Source) hold(ctx context.Context, req cache.FetchRequest, ring *keyring, n names, owner string) (cache.Token, string, error) {
	defer func() {
		// Released even when the fetch's context has ended.
		_ = s.store.release(context.WithoutCancel(ctx), n.lease, owner, s.notes.channel)
	}()
	// The previous holder may have shared its token and released the lease
	// between this sidecar's look-up and its acquisition.
	vals, err := s.store.get(ctx, n.entries)
	if err != nil {
		return s.direct(ctx, req, err)
	}
	e, found := s.open(ctx, ring, req.Key, vals, false)
	if found && s.accepts(req, e) {
		return s.adopt(ctx, req, e)
	}
	var forcedAt int64
	if req.Reason == cache.ReasonForced && s.cfg.MinRefreshInterval > 0 {
		now := s.cfg.Now()
		won, since, err := s.store.claim(ctx, n.marker, now, s.cfg.MinRefreshInterval)
		if err != nil {
			return s.direct(ctx, req, err)
		}
		if !won {
			// A forced exchange of this key ran on some sidecar inside the
			// interval, and has ended (it held this lease). Its token is
			// the answer, even if it is the refused one; without it, its
			// error was not shared: answer a retryable one.
			if found && now.Before(e.token.UsableUntil()) && e.forcedAt >= since {
				s.metrics.adopted(ctx, req.Reason.String())
				return e.token, resultLimited, nil
			}
			// Another pod's clock set since: never answer a wait longer
			// than the interval itself.
			retry := min(time.UnixMilli(since).Add(s.cfg.MinRefreshInterval).Sub(now), s.cfg.MinRefreshInterval)
			return cache.Token{}, resultLimited, &RefreshLimitedError{
				Provider: req.Key.Provider, Tenant: req.Key.Tenant,
				Retry: retry, Until: now.Add(retry),
			}
		}
		forcedAt = since
	}
	stop := s.keepLease(ctx, n.lease, owner)
	tok, err := s.cfg.Inner.Fetch(ctx, req)
	stop()
	if err != nil {
		return tok, resultFetched, err
	}
	s.share(ctx, ring, req.Key, n, sharedEntry{token: tok, forcedAt: forcedAt})
	return tok, resultFetched, nil
}

// keepLease renews the lease every third of its length until the returned
// function is called (which waits for the renewer to stop). A renewal that
// finds the lease gone stops renewing: another sidecar has taken over, and
// two exchanges are harmless.
func (s *Source) keepLease(ctx context.Context, lease, owner string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(s.cfg.Lease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if ok, err := s.store.renew(ctx, lease, owner, s.cfg.Lease); err == nil && !ok {
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// share writes e under the first key's name until its token's margin. A
// failed write is counted and otherwise ignored: the token is served anyway.
func (s *Source) share(ctx context.Context, ring *keyring, key cache.Key, n names, e sharedEntry) {
	ttl := e.token.UsableUntil().Sub(s.cfg.Now())
	if ttl < time.Millisecond { // Redis reads PX 0 as an error
		return
	}
	err := s.store.put(ctx, n.entries[0], ring.seal(key, e.marshal()), ttl)
	s.metrics.wrote(ctx, err == nil)
	if err != nil {
		s.logger.DebugContext(ctx, "shared cache write failed", "error", err.Error())
	}
}

// newOwner is a lease owner value: random, so that only its taker can
// release or renew it.
func newOwner() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// RefreshLimitedError answers a forced refresh that another sidecar's forced
// exchange of the same key, inside the fleet's minimum refresh interval, has
// already answered without a token this one could serve. The HTTP layer
// answers it 503 with Retry-After.
type RefreshLimitedError struct {
	Provider, Tenant string
	// Retry is the time left in the fleet's interval, at most the interval.
	Retry time.Duration
	// Until is when the fleet's interval ends, by this pod's clock.
	Until time.Time
}

// LimitedUntil implements cache.LimitedError: the pod's own forced-refresh
// interval for the key ends with the fleet's.
func (e *RefreshLimitedError) LimitedUntil() time.Time { return e.Until }

func (e *RefreshLimitedError) Error() string {
	return fmt.Sprintf("sharedcache: the %s token of tenant %q was force-refreshed by another sidecar less than the minimum refresh interval ago, without a new token", e.Provider, e.Tenant)
}

// ErrorCode is the contract's code for a transient exchange failure.
func (e *RefreshLimitedError) ErrorCode() string { return "OAUTH_EXCHANGE_FAILED" }

// RetryAfter is the time left in the interval.
func (e *RefreshLimitedError) RetryAfter() time.Duration { return max(e.Retry, time.Second) }

// jitter spreads d by ±25 %, so that the waiters of many sidecars do not
// poll in step.
func jitter(d time.Duration) time.Duration {
	return d*3/4 + time.Duration(mrand.Int64N(int64(d)/2+1))
}
