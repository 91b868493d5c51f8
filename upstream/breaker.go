package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
)

// Breaker defaults; BreakerConfig documents them.
const (
	defaultBreakerFailureThreshold = 5
	defaultBreakerFailureRate      = 0.5
	defaultBreakerWindow           = 10 * time.Second
	defaultBreakerOpenDuration     = 10 * time.Second
	defaultBreakerHalfOpenProbes   = 2
)

// minBreakerWindow is the shortest Window a breaker accepts. failsafe-go
// slides the window in tenths of it; a shorter one would judge a burst of a
// few milliseconds, the very thing a time window is there to average out.
const minBreakerWindow = 100 * time.Millisecond

// ErrCircuitOpen is the cause (Error.Err, found by errors.Is) of a call that
// was refused without an attempt because the circuit breaker of the
// upstream host was open.
var ErrCircuitOpen = errors.New("circuit breaker open")

// BreakerConfig configures the circuit breakers of a client: one per
// upstream host (the scheme and host:port an attempt goes to), so that one
// Genesys region's login host failing never blocks another region. Every
// zero value means the documented default.
//
// A breaker opens on a sustained failure of its host, not on a few tenants'
// failures: when, within the last Window, at least FailureThreshold distinct
// tenants had host failures, at least MinAttempts attempts were made and at
// least FailureRate of them were host failures — by default when 5 tenants
// failed and at least 10 attempts within the last 10 s were made, half of
// them failures. A burst of one tenant's failing attempts (3 with retries)
// among a busy host's successes does not open it, however close together
// they come, and neither do four tenants whose every attempt fails (a
// Tenant Service that answers 500 for their records only): one tenant's or a
// few tenants' failures say something about them, not about the host. A host
// that fails every attempt opens at the first attempt that makes both
// FailureThreshold tenants and MinAttempts attempts within a Window. A host
// that gets fewer than MinAttempts attempts per Window never opens: so few
// failures do not tell an outage from a bad tenant.
//
// How the tenants are counted: failsafe-go's breaker keeps the rate over the
// Window; a host failure is given to it only once the failures within the
// Window come from FailureThreshold distinct tenants. Until then failures
// wait, unrecorded (the last MinAttempts of them, up to 1024, those older
// than a Window dropped), and are recorded all at once when the tenant that
// completes the count fails; successes are always recorded. So the rate the
// breaker judges counts every failure of the Window once the tenants are
// there, and none before. A half-open breaker's probes decide alone, as
// below: the host was already judged failing.
//
// A breaker counts each attempt, retries included. Only failures of the host
// count against it: 5xx, 408, attempt timeouts, network and TLS errors. A
// 4xx is the host's verdict on one request (a tenant's 400 invalid_client or
// 404) and counts as a success, and so do 429 and Genesys's rate-limit 400 —
// the host protecting itself per client, which its Retry-After already
// handles — and an attempt cut short by the caller's context, which says
// nothing about the host.
//
// An open breaker fails calls at once, without an HTTP attempt and without
// retrying, with the upstream's "unavailable" code and ErrCircuitOpen; the
// Error's RetryAfterHint is the time left until it half-opens (at least 1 s).
type BreakerConfig struct {
	// FailureThreshold is the fewest host failures, and the fewest distinct
	// tenants they come from, that open a breaker; 0 means 5. A negative
	// value turns the breakers off. It sets the minimum sample: a breaker
	// judges its host only once the Window holds MinAttempts =
	// ⌈FailureThreshold / FailureRate⌉ attempts, the fewest in which
	// FailureThreshold failures reach FailureRate (10 by default).
	FailureThreshold int
	// FailureRate is the share of the attempts within Window, in (0, 1],
	// that must be host failures to open the breaker; 0 means 0.5.
	// failsafe-go compares it with the observed rate rounded to hundredths.
	FailureRate float64
	// Window is the rolling period the attempts are counted over; 0 means
	// 10 s, and it must be at least 100 ms. failsafe-go slides it in tenths:
	// an attempt counts for between 0.9 and 1 Window.
	Window time.Duration
	// OpenDuration is how long an open breaker refuses calls before it
	// half-opens; 0 means 10 s.
	OpenDuration time.Duration
	// HalfOpenProbes is how many attempts a half-open breaker lets through:
	// when all of them succeed it closes, at the first host failure it opens
	// again for OpenDuration. Calls beyond the probes are refused as while
	// open. 0 means 2. Closing starts a new, empty Window.
	HalfOpenProbes int
}

// breakerMinAttempts is ⌈threshold / rate⌉: the fewest attempts in which
// threshold failures make at least rate of them. The small epsilon keeps
// binary fractions from rounding 3/0.3 = 10.000000000000002 up to 11.
func breakerMinAttempts(threshold int, rate float64) uint {
	return uint(math.Ceil(float64(threshold)/rate - 1e-9))
}

// breakers holds one circuit breaker per upstream host of a client. The set
// of hosts is small by construction — the Tenant Service's one host, and the
// login hosts of the region catalogue or the one override — so the map is
// never pruned. It is safe for concurrent use.
type breakers struct {
	upstream       string
	minTenants     int // FailureThreshold: distinct failing tenants
	minAttempts    uint
	failureRate    float64
	window         time.Duration
	openDuration   time.Duration
	halfOpenProbes uint
	log            *slog.Logger
	tel            *telemetry

	mu     sync.Mutex
	byHost map[string]*hostBreaker
}

// newBreakers applies cfg's defaults; it returns nil, meaning no breakers,
// when cfg turns them off.
func newBreakers(upstream string, cfg BreakerConfig, log *slog.Logger, tel *telemetry) (*breakers, error) {
	if cfg.FailureThreshold < 0 {
		return nil, nil
	}
	threshold := cfg.FailureThreshold
	if threshold == 0 {
		threshold = defaultBreakerFailureThreshold
	}
	rate := cfg.FailureRate
	if rate == 0 {
		rate = defaultBreakerFailureRate
	}
	window := orDefault(cfg.Window, defaultBreakerWindow)
	probes := cfg.HalfOpenProbes
	if probes == 0 {
		probes = defaultBreakerHalfOpenProbes
	}
	switch {
	case !(rate > 0 && rate <= 1): // NaN too
		return nil, fmt.Errorf("upstream %s: breaker FailureRate %v is not in (0, 1]", upstream, rate)
	case window < minBreakerWindow:
		return nil, fmt.Errorf("upstream %s: breaker Window %v is shorter than %v", upstream, window, minBreakerWindow)
	case probes < 0:
		return nil, fmt.Errorf("upstream %s: negative breaker HalfOpenProbes", upstream)
	case cfg.OpenDuration < 0:
		return nil, fmt.Errorf("upstream %s: negative breaker OpenDuration", upstream)
	}
	return &breakers{
		upstream:       upstream,
		minTenants:     threshold,
		minAttempts:    breakerMinAttempts(threshold, rate),
		failureRate:    rate,
		window:         window,
		openDuration:   orDefault(cfg.OpenDuration, defaultBreakerOpenDuration),
		halfOpenProbes: uint(probes),
		log:            log,
		tel:            tel,
		byHost:         map[string]*hostBreaker{},
	}, nil
}

// hostKey names the host a URL points at: scheme and host:port, lower case.
// It is the key of the host's breaker and its "host" label.
func hostKey(u *url.URL) string {
	return strings.ToLower(u.Scheme + "://" + u.Host)
}

// forHost returns host's breaker, creating it closed on first use; nil when
// b is nil (breakers off).
func (b *breakers) forHost(host string) *hostBreaker {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if h, ok := b.byHost[host]; ok {
		return h
	}
	h := &hostBreaker{
		minTenants: b.minTenants,
		window:     b.window,
		maxPending: int(min(b.minAttempts, maxPendingFailures)),
		now:        time.Now,
		failing:    map[string]time.Time{},
	}
	h.cb = circuitbreaker.NewBuilder[*outcome]().
		// Closed: time based, on the rate over the window's attempts once
		// there are minAttempts of them. hostBreaker.record decides what is
		// recorded, so no HandleIf: failsafe-go never sees an attempt.
		WithFailureRateThreshold(b.failureRate, b.minAttempts, b.window).
		// Half-open: count based whatever the closed rule (failsafe-go's
		// half-open state never uses the time window when a success
		// threshold is set): it lets halfOpenProbes attempts through at a
		// time, closes when halfOpenProbes have succeeded and reopens at the
		// first failure.
		WithSuccessThreshold(b.halfOpenProbes).
		WithDelay(b.openDuration).
		// Called with h.mu held: every transition happens inside acquire or
		// record.
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) { b.changed(host, e, h.tenants) }).
		Build()
	b.byHost[host] = h
	b.tel.circuitState(host, circuitbreaker.ClosedState)
	return h
}

// maxPendingFailures bounds the host failures a breaker holds back while
// fewer than FailureThreshold tenants failed.
const maxPendingFailures = 1024

// hostBreaker is one host's circuit breaker: failsafe-go's breaker, used
// standalone (a permit before each attempt, its outcome recorded after), so
// that the distinct-tenant rule of BreakerConfig decides what the breaker's
// closed state is given to record. Safe for concurrent use; every use of cb
// goes through its methods, under mu, so that the state a permit was taken
// in is known when its outcome is recorded and every transition happens
// under mu.
type hostBreaker struct {
	cb         circuitbreaker.CircuitBreaker[*outcome]
	minTenants int
	window     time.Duration
	maxPending int
	now        func() time.Time

	mu sync.Mutex
	// failing holds the tenants with a host failure, each with its latest,
	// at most minTenants of them: the freshest, as no more are needed to
	// tell whether minTenants failed within a window.
	failing map[string]time.Time
	// pending are the times of the failures not yet recorded, because fewer
	// than minTenants tenants had failed; oldest first, at most maxPending.
	pending []time.Time
	// tenants is how many failing tenants the last recorded failure saw,
	// for the log line of an opening.
	tenants int
}

// permit is what acquire hands to record: whether the attempt is a probe of
// a half-open breaker.
type permit struct{ probe bool }

// acquire asks for an attempt; false means the breaker refuses it. A nil
// hostBreaker (breakers off) allows every attempt.
func (h *hostBreaker) acquire() (permit, bool) {
	if h == nil {
		return permit{}, true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.cb.TryAcquirePermit() {
		return permit{}, false
	}
	return permit{probe: h.cb.State() == circuitbreaker.HalfOpenState}, true
}

// record counts the outcome of an attempt acquire allowed for tenant: a host
// failure (result.hostFault) against the host, anything else for it. A
// probe's outcome is recorded as it is. In the closed state a failure is
// recorded only once the failures within the window come from minTenants
// tenants, the ones held back until then with it. An outcome whose permit
// was taken in another state than the breaker is in now (it opened or
// half-opened meanwhile) is not recorded: it belongs to a past judgement.
func (h *hostBreaker) record(p permit, tenant string, o *outcome) {
	if h == nil {
		return
	}
	fault := o != nil && o.res.hostFault
	h.mu.Lock()
	defer h.mu.Unlock()
	switch st := h.cb.State(); {
	case p.probe && st == circuitbreaker.HalfOpenState:
		if fault {
			h.cb.RecordFailure()
			return
		}
		h.cb.RecordSuccess()
		if h.cb.State() == circuitbreaker.ClosedState {
			// Closing starts a new, empty window: failures seen before
			// the breaker opened judge the host no more.
			clear(h.failing)
			h.pending = h.pending[:0]
		}
	case st != circuitbreaker.ClosedState:
	case !fault:
		h.cb.RecordSuccess()
	default:
		for range h.noteFailure(tenant) {
			h.cb.RecordFailure()
		}
	}
}

// noteFailure notes a host failure of tenant and returns how many failures
// to record now: 0 while fewer than minTenants tenants failed within the
// window (this one is held back), else this one and those held back that
// are still within the window. Called with mu held.
func (h *hostBreaker) noteFailure(tenant string) int {
	now := h.now()
	cutoff := now.Add(-h.window)
	var oldest string
	var oldestAt time.Time
	for t, last := range h.failing {
		switch {
		case !last.After(cutoff):
			delete(h.failing, t)
		case oldestAt.IsZero() || last.Before(oldestAt):
			oldest, oldestAt = t, last
		}
	}
	if _, ok := h.failing[tenant]; !ok && len(h.failing) >= h.minTenants {
		delete(h.failing, oldest) // enough tenants without it
	}
	h.failing[tenant] = now
	h.tenants = len(h.failing)
	if len(h.failing) < h.minTenants {
		if len(h.pending) == h.maxPending {
			h.pending = h.pending[1:]
		}
		h.pending = append(h.pending, now)
		return 0
	}
	n := 1
	for _, t := range h.pending {
		if t.After(cutoff) {
			n++
		}
	}
	h.pending = h.pending[:0]
	return n
}

// State is the breaker's state.
func (h *hostBreaker) State() circuitbreaker.State { return h.cb.State() }

// IsOpen reports whether the breaker refuses every attempt for now.
func (h *hostBreaker) IsOpen() bool { return h.cb.IsOpen() }

// changed logs and records a state change. failsafe-go calls it outside the
// breaker's lock, from the goroutine whose attempt caused the change.
func (b *breakers) changed(host string, e circuitbreaker.StateChangedEvent, tenants int) {
	b.tel.circuitState(host, e.NewState)
	b.tel.circuitTransition(host, e.NewState)
	attrs := []slog.Attr{
		slog.String("upstream", b.upstream),
		slog.String("host", host),
		slog.String("from", e.OldState.String()),
	}
	level, msg := slog.LevelInfo, ""
	switch e.NewState {
	case circuitbreaker.OpenState:
		level, msg = slog.LevelWarn, "circuit breaker opened: calls to the host are refused"
		m := e.Metrics()
		attrs = append(attrs, slog.Int("failures", int(m.Failures())), slog.Int("attempts", int(m.Executions())))
		if e.OldState == circuitbreaker.ClosedState {
			attrs = append(attrs, slog.Int("tenants", tenants))
		}
		attrs = append(attrs, slog.Duration("open_for", b.openDuration))
	case circuitbreaker.HalfOpenState:
		msg = "circuit breaker half-open: probing the host"
		attrs = append(attrs, slog.Int("probes", int(b.halfOpenProbes)))
	default:
		msg = "circuit breaker closed: the host answers again"
	}
	ctx := e.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	b.log.LogAttrs(ctx, level, msg, attrs...)
}

// openHint is how long a caller refused by cb should wait: the time left
// until cb half-opens, rounded up to whole seconds and at least 1 s (a
// half-open breaker whose probes are taken has no time left, but the probes
// need a moment).
func openHint(h *hostBreaker) time.Duration {
	d := h.cb.RemainingDelay()
	d = (d + time.Second - 1).Truncate(time.Second)
	return max(d, time.Second)
}
