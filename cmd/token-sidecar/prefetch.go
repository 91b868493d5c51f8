package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/upstream"
)

// prefetchRetryDelay is the wait between two tries of a prefetch that failed
// transiently, when the error gives no Retry-After.
const prefetchRetryDelay = time.Second

// prefetch fetches keys into tokens at start (-prefetch-tenants), each until
// it is cached or fails terminally, all within timeout. The returned
// function reports, without blocking, whether prefetch is over: /readyz
// answers 503 until it is, so that with a native sidecar the app containers
// start with warm tokens. A transient failure is tried again (after the
// error's Retry-After, else prefetchRetryDelay). Prefetched tokens count as
// not yet served: a tenant no app asks for is not refreshed ahead.
func prefetch(ctx context.Context, tokens *cache.Cache, keys []cache.Key, timeout time.Duration, logger *slog.Logger) (done func() bool) {
	var over atomic.Bool
	if len(keys) == 0 {
		over.Store(true)
		return over.Load
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	var wg sync.WaitGroup
	var cached atomic.Int64
	for _, key := range keys {
		wg.Go(func() {
			if prefetchOne(ctx, tokens, key, logger) {
				cached.Add(1)
			}
		})
	}
	go func() {
		wg.Wait()
		cancel()
		over.Store(true)
		logger.Info("prefetch over", "tenants", len(keys), "cached", cached.Load())
	}()
	return over.Load
}

// prefetchOne fetches key until it is cached (true), fails terminally or
// ctx ends (false).
func prefetchOne(ctx context.Context, tokens *cache.Cache, key cache.Key, logger *slog.Logger) bool {
	for {
		err := tokens.Warm(ctx, key)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			logger.Warn("prefetch gave up at -prefetch-timeout", "provider", key.Provider, "tenant", key.Tenant, "error", err.Error())
			return false
		}
		if !transient(err) {
			logger.Warn("prefetch failed for good", "provider", key.Provider, "tenant", key.Tenant, "error", err.Error())
			return false
		}
		wait := prefetchRetryDelay
		var ra interface{ RetryAfter() time.Duration }
		if errors.As(err, &ra) && ra.RetryAfter() > 0 {
			wait = ra.RetryAfter()
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			logger.Warn("prefetch gave up at -prefetch-timeout", "provider", key.Provider, "tenant", key.Tenant, "error", err.Error())
			return false
		}
	}
}

// transient reports an error that a later try may not have: an upstream
// that was unavailable, or a fetch that could not run.
func transient(err error) bool {
	var ue *upstream.Error
	if errors.As(err, &ue) {
		return ue.Code == upstream.CodeTenantServiceUnavailable || ue.Code == upstream.CodeOAuthExchangeFailed
	}
	var unavailable *cache.UnavailableError
	return errors.As(err, &unavailable)
}
