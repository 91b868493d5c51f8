package main

import (
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/sharedcache"
)

// redisLogOnce sets go-redis's process-wide logger once: tests run run()
// many times in one process.
var redisLogOnce sync.Once

// withSharedCache puts the shared cache in front of source when
// -shared-cache-url is set; otherwise source is used as it is. The returned
// function closes what it opened.
func withSharedCache(cfg config, source tokenSource, logger *slog.Logger, tel *telemetry) (cache.Source, func(), error) {
	if cfg.SharedCacheURL == "" {
		return source, func() {}, nil
	}
	redisLogOnce.Do(func() { redis.SetLogger(sharedcache.RedisLogger{Logger: logger}) })
	shared, err := sharedcache.New(sharedcache.Config{
		Inner:              source,
		URL:                cfg.SharedCacheURL,
		KeyFile:            cfg.SharedCacheKeyFile,
		Prefix:             cfg.SharedCachePrefix,
		Timeout:            cfg.SharedCacheTimeout,
		Lease:              cfg.SharedCacheLease,
		MinRefreshInterval: cfg.MinRefreshInterval,
		// A pod waits for another's lease only while the whole fetch would
		// still fit, then fetches on its own: waiting never makes a request
		// fail that fetching would have answered.
		InnerBudget:    source.pipeline.LongestIssue() + fetchTimeoutSlack,
		Logger:         logger,
		MeterProvider:  tel.meter(),
		TracerProvider: tel.tracerProvider,
	})
	if err != nil {
		return nil, nil, err
	}
	logger.Info("shared cache on", "shared_cache_server", shared.Server(), "prefix", cfg.SharedCachePrefix)
	return shared, func() { _ = shared.Close() }, nil
}

// sharedCacheCommands is how many shared-cache commands a fetch may send
// before it calls the upstreams (look-up, lease, look-up again, the forced
// marker), each bounded by -shared-cache-timeout.
const sharedCacheCommands = 6

// sharedCacheAllowance is what the shared cache may add to a fetch before
// the upstreams are called: its commands, and a wait for another pod's
// lease (one -shared-cache-lease, the longest a dead holder delays others).
// Zero without a shared cache.
func (c config) sharedCacheAllowance() time.Duration {
	if c.SharedCacheURL == "" {
		return 0
	}
	return c.SharedCacheLease + sharedCacheCommands*c.SharedCacheTimeout
}
