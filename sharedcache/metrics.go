package sharedcache

import (
	"context"
	"fmt"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// instrumentationName names the meter and the tracer of this package.
const instrumentationName = "github.com/token-sidecar/token-sidecar/sharedcache"

// Lookup outcomes, the outcome label of token_sidecar.shared_cache.lookups.
const (
	lookupHit           = "hit"           // an entry opened and was usable
	lookupMiss          = "miss"          // no entry, or only an expired one
	lookupError         = "error"         // the command failed or the breaker was open
	lookupUndecryptable = "undecryptable" // an entry was there but did not open
)

// Lease outcomes, the outcome label of token_sidecar.shared_cache.leases.
const (
	leaseAcquired  = "acquired"   // took a free lease at the first try
	leaseWaited    = "waited"     // found it held and waited for its holder
	leaseTakenOver = "taken_over" // took it after waiting: its holder ended without a usable token, or died
)

// Fallback causes, the cause label of token_sidecar.shared_cache.fallbacks:
// why a fetch called the upstreams directly, as without a shared cache.
const (
	fallbackError       = "error"        // a command failed (down, slow, refused, full, garbage)
	fallbackBreakerOpen = "breaker_open" // the breaker stopped the command
	fallbackStuckLease  = "stuck_lease"  // a lease without expiry (garbage)
)

// metrics are the package's instruments; a nil MeterProvider gives no-op
// ones. Labels never carry a tenant, a name or a value.
type metrics struct {
	lookups, leases, adoptions, fallbacks, writes metric.Int64Counter
	duration                                      metric.Float64Histogram
	breakerState                                  metric.Int64ObservableGauge
	reg                                           metric.Registration
}

// Breaker states as token_sidecar.shared_cache.breaker.state reports them.
func breakerValue(s circuitbreaker.State) int64 {
	switch s {
	case circuitbreaker.OpenState:
		return 2
	case circuitbreaker.HalfOpenState:
		return 1
	default:
		return 0
	}
}

func newMetrics(mp metric.MeterProvider, breaker func() circuitbreaker.State) (*metrics, error) {
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter(instrumentationName)
	var ms metrics
	var err error
	counter := func(name, unit, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var c metric.Int64Counter
		c, err = m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		return c
	}
	ms.lookups = counter("token_sidecar.shared_cache.lookups", "{lookup}",
		"Shared-cache look-ups made by the cache's fetches, by outcome: hit, miss, error, undecryptable.")
	ms.leases = counter("token_sidecar.shared_cache.leases", "{lease}",
		"Fleet fetch leases, by outcome: acquired (free at once), waited (held by another sidecar), taken_over (taken after waiting).")
	ms.adoptions = counter("token_sidecar.shared_cache.adoptions", "{token}",
		"Tokens another sidecar fetched, taken from the shared cache instead of fetching, by reason: miss, ahead, forced.")
	ms.fallbacks = counter("token_sidecar.shared_cache.fallbacks", "{fetch}",
		"Fetches that called the upstreams directly because the shared cache failed, by cause: error, breaker_open, stuck_lease.")
	ms.writes = counter("token_sidecar.shared_cache.writes", "{token}",
		"Tokens written to the shared cache, by outcome: ok, error.")
	if err != nil {
		return nil, fmt.Errorf("sharedcache: creating instruments: %w", err)
	}
	ms.duration, err = m.Float64Histogram("token_sidecar.shared_cache.command.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Round trips to the shared-cache server, by command name and outcome."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5))
	if err != nil {
		return nil, fmt.Errorf("sharedcache: creating instruments: %w", err)
	}
	ms.breakerState, err = m.Int64ObservableGauge("token_sidecar.shared_cache.breaker.state",
		metric.WithDescription("The shared-cache circuit breaker: 0 closed, 1 half-open, 2 open (fetches go to the upstreams directly)."))
	if err != nil {
		return nil, fmt.Errorf("sharedcache: creating instruments: %w", err)
	}
	ms.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(ms.breakerState, breakerValue(breaker()))
		return nil
	}, ms.breakerState)
	if err != nil {
		return nil, fmt.Errorf("sharedcache: registering the breaker gauge: %w", err)
	}
	return &ms, nil
}

func (m *metrics) lookup(ctx context.Context, outcome string) {
	m.lookups.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (m *metrics) lease(ctx context.Context, outcome string) {
	m.leases.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (m *metrics) adopted(ctx context.Context, reason string) {
	m.adoptions.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", reason)))
}

func (m *metrics) fallback(ctx context.Context, cause string) {
	m.fallbacks.Add(ctx, 1, metric.WithAttributes(attribute.String("cause", cause)))
}

func (m *metrics) wrote(ctx context.Context, ok bool) {
	outcome := "ok"
	if !ok {
		outcome = "error"
	}
	m.writes.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome)))
}

func (m *metrics) command(name string, took time.Duration, failed bool) {
	outcome := "ok"
	if failed {
		outcome = "error"
	}
	m.duration.Record(context.Background(), took.Seconds(),
		metric.WithAttributes(attribute.String("command", name), attribute.String("outcome", outcome)))
}
