package main

import (
	"log/slog"
	"sync"

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
func withSharedCache(cfg config, source cache.Source, logger *slog.Logger, tel *telemetry) (cache.Source, func(), error) {
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
		Logger:             logger,
		MeterProvider:      tel.meter(),
		TracerProvider:     tel.tracerProvider,
	})
	if err != nil {
		return nil, nil, err
	}
	logger.Info("shared cache on", "shared_cache_server", shared.Server(), "prefix", cfg.SharedCachePrefix)
	return shared, func() { _ = shared.Close() }, nil
}
