package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// instrumentationName names the meter and the tracer of this package.
const instrumentationName = "github.com/token-sidecar/token-sidecar/cache"

// Metric attribute keys. The tenant is only ever a label when
// Config.MetricsTenantLabel is on (cardinality), and never on a histogram.
const (
	attrProvider = attribute.Key("provider")
	attrTenant   = attribute.Key("tenant")
	attrTrigger  = attribute.Key("trigger")
)

// LifetimeBuckets are the bucket boundaries, in seconds, of
// token_sidecar.token.remaining_lifetime: from the 30 s safety margin to a
// Genesys token's full day.
var LifetimeBuckets = []float64{30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 21600, 28800, 43200, 57600, 72000, 86400}

// metricsObserver is the Observer that counts cache events with
// OpenTelemetry instruments (see the README's "Observability" section for
// the names). It is safe for concurrent use.
//
// The hit path must stay cheap: without the tenant label every measurement
// uses option slices built once per provider, so recording allocates
// nothing in this package, and hits are counted in an atomic per provider
// that an observable counter reports at collection time: a cached token
// then costs one synchronous measurement here (the remaining lifetime), not
// two.
type metricsObserver struct {
	hits, staleHits, misses, negativeHits, collapsed metric.Int64Counter
	refreshes, refreshLimited, evictions             metric.Int64Counter
	remaining                                        metric.Float64Histogram

	tenantLabel bool

	// byProvider is a copy-on-write map from provider to its prepared
	// options: read without a lock on every event, written under mu the
	// first time a provider is seen (a handful of times per process).
	byProvider atomic.Pointer[map[string]*providerOptions]
	mu         sync.Mutex
}

// providerOptions are the measurement options of one provider.
type providerOptions struct {
	set           attribute.Set // provider=…
	hits          atomic.Int64  // token_sidecar.cache.hits without the tenant label
	add           []metric.AddOption
	record        []metric.RecordOption
	refreshAhead  []metric.AddOption
	refreshTimer  []metric.AddOption
	refreshForced []metric.AddOption
}

// Values of the trigger attribute of token_sidecar.cache.refreshes and of the
// cache.fetch span.
const (
	triggerMiss         = "miss"
	triggerRefreshAhead = "ahead"
	triggerTimer        = "timer"
	triggerForced       = "forced"
)

func newMetricsObserver(m metric.Meter, tenantLabel bool) (*metricsObserver, error) {
	o := &metricsObserver{tenantLabel: tenantLabel}
	empty := map[string]*providerOptions{}
	o.byProvider.Store(&empty)
	var errs []error
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	const hitsName, hitsDesc = "token_sidecar.cache.hits", "Token requests answered with a cached token."
	if tenantLabel {
		o.hits = counter(hitsName, "{request}", hitsDesc)
	} else {
		_, err := m.Int64ObservableCounter(hitsName, metric.WithUnit("{request}"), metric.WithDescription(hitsDesc),
			metric.WithInt64Callback(o.observeHits))
		errs = append(errs, err)
	}
	o.staleHits = counter("token_sidecar.cache.stale_hits", "{request}", "Cache hits past the token's refresh point (a refresh runs or has failed); also counted in hits.")
	o.misses = counter("token_sidecar.cache.misses", "{request}", "Token requests that found no usable cached token and waited for a fetch.")
	o.negativeHits = counter("token_sidecar.cache.negative_hits", "{request}", "Token requests answered with a cached error (CREDENTIALS_NOT_FOUND, OAUTH_INVALID_GRANT).")
	o.collapsed = counter("token_sidecar.cache.collapsed", "{request}", "Token requests that joined a fetch another request had started.")
	o.refreshes = counter("token_sidecar.cache.refreshes", "{fetch}", "Fetches started to replace a token: trigger=ahead (refresh ahead of expiry on a request), timer (refresh ahead by the cache's own timer) or forced (POST /token/refresh, an API 401).")
	o.refreshLimited = counter("token_sidecar.cache.refresh_limited", "{request}", "Forced refreshes inside -min-refresh-interval, answered with the previous forced refresh's token.")
	o.evictions = counter("token_sidecar.cache.evictions", "{entry}", "Entries evicted because the cache was full.")
	var err error
	o.remaining, err = m.Float64Histogram("token_sidecar.token.remaining_lifetime",
		metric.WithUnit("s"),
		metric.WithDescription("Time a served cached token remained usable (until its safety margin), at serve time."),
		metric.WithExplicitBucketBoundaries(LifetimeBuckets...))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cache: creating instruments: %w", err)
	}
	return o, nil
}

// options returns the prepared options of provider, making them the first
// time.
func (o *metricsObserver) options(provider string) *providerOptions {
	if p, ok := (*o.byProvider.Load())[provider]; ok {
		return p
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	old := *o.byProvider.Load()
	if p, ok := old[provider]; ok {
		return p
	}
	base := attribute.NewSet(attrProvider.String(provider))
	p := &providerOptions{
		set:           base,
		add:           []metric.AddOption{metric.WithAttributeSet(base)},
		record:        []metric.RecordOption{metric.WithAttributeSet(base)},
		refreshAhead:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attrProvider.String(provider), attrTrigger.String(triggerRefreshAhead)))},
		refreshTimer:  []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attrProvider.String(provider), attrTrigger.String(triggerTimer)))},
		refreshForced: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attrProvider.String(provider), attrTrigger.String(triggerForced)))},
	}
	next := make(map[string]*providerOptions, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[provider] = p
	o.byProvider.Store(&next)
	return p
}

// add counts one event of key on c, with the trigger attribute when trigger
// is not "".
func (o *metricsObserver) add(c metric.Int64Counter, key Key, trigger string) {
	ctx := context.Background()
	if o.tenantLabel {
		attrs := []attribute.KeyValue{attrProvider.String(key.Provider), attrTenant.String(key.Tenant)}
		if trigger != "" {
			attrs = append(attrs, attrTrigger.String(trigger))
		}
		c.Add(ctx, 1, metric.WithAttributeSet(attribute.NewSet(attrs...)))
		return
	}
	p := o.options(key.Provider)
	switch trigger {
	case triggerRefreshAhead:
		c.Add(ctx, 1, p.refreshAhead...)
	case triggerTimer:
		c.Add(ctx, 1, p.refreshTimer...)
	case triggerForced:
		c.Add(ctx, 1, p.refreshForced...)
	default:
		c.Add(ctx, 1, p.add...)
	}
}

// Hit implements Observer.
func (o *metricsObserver) Hit(key Key, remaining time.Duration, stale bool) {
	p := o.options(key.Provider)
	if o.tenantLabel {
		o.add(o.hits, key, "")
	} else {
		p.hits.Add(1)
	}
	if stale {
		o.add(o.staleHits, key, "")
	}
	o.remaining.Record(context.Background(), remaining.Seconds(), p.record...)
}

// observeHits reports the hits counted per provider (without the tenant
// label). A provider is reported from its first hit on.
func (o *metricsObserver) observeHits(_ context.Context, obs metric.Int64Observer) error {
	for _, p := range *o.byProvider.Load() {
		if n := p.hits.Load(); n > 0 {
			obs.Observe(n, metric.WithAttributeSet(p.set))
		}
	}
	return nil
}

// Miss implements Observer.
func (o *metricsObserver) Miss(key Key) { o.add(o.misses, key, "") }

// NegativeHit implements Observer.
func (o *metricsObserver) NegativeHit(key Key) { o.add(o.negativeHits, key, "") }

// Collapsed implements Observer.
func (o *metricsObserver) Collapsed(key Key) { o.add(o.collapsed, key, "") }

// RefreshAhead implements Observer.
func (o *metricsObserver) RefreshAhead(key Key) { o.add(o.refreshes, key, triggerRefreshAhead) }

// RefreshTimer implements Observer.
func (o *metricsObserver) RefreshTimer(key Key) { o.add(o.refreshes, key, triggerTimer) }

// ForcedRefresh implements Observer.
func (o *metricsObserver) ForcedRefresh(key Key) { o.add(o.refreshes, key, triggerForced) }

// ForcedRefreshLimited implements Observer.
func (o *metricsObserver) ForcedRefreshLimited(key Key) { o.add(o.refreshLimited, key, "") }

// Evicted implements Observer.
func (o *metricsObserver) Evicted(key Key) { o.add(o.evictions, key, "") }

// observers tells every Observer of a list about every event.
type observers []Observer

func (os observers) Hit(key Key, remaining time.Duration, stale bool) {
	for _, o := range os {
		o.Hit(key, remaining, stale)
	}
}

func (os observers) Miss(key Key) {
	for _, o := range os {
		o.Miss(key)
	}
}

func (os observers) NegativeHit(key Key) {
	for _, o := range os {
		o.NegativeHit(key)
	}
}

func (os observers) Collapsed(key Key) {
	for _, o := range os {
		o.Collapsed(key)
	}
}

func (os observers) RefreshAhead(key Key) {
	for _, o := range os {
		o.RefreshAhead(key)
	}
}

func (os observers) RefreshTimer(key Key) {
	for _, o := range os {
		o.RefreshTimer(key)
	}
}

func (os observers) ForcedRefresh(key Key) {
	for _, o := range os {
		o.ForcedRefresh(key)
	}
}

func (os observers) ForcedRefreshLimited(key Key) {
	for _, o := range os {
		o.ForcedRefreshLimited(key)
	}
}

func (os observers) Evicted(key Key) {
	for _, o := range os {
		o.Evicted(key)
	}
}
