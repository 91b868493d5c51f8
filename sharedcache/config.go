package sharedcache

import (
	"errors"
	"log/slog"
	"net/url"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/token-sidecar/token-sidecar/cache"
)

// Defaults for the zero values of Config.
const (
	DefaultPrefix          = "token-sidecar:"
	DefaultTimeout         = 200 * time.Millisecond
	DefaultLease           = 5 * time.Second
	DefaultKeyPollInterval = 10 * time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerDelay    = 5 * time.Second
	// DefaultPoolSize is the connection pool's size unless the URL sets
	// pool_size.
	DefaultPoolSize = 32
	// DefaultMinIdleConns is how many connections are kept open (and
	// dialled at start) unless the URL sets min_idle_conns.
	DefaultMinIdleConns = 8
)

// Config configures a Source. Inner, URL and KeyFile are required.
type Config struct {
	// Inner fetches from the upstreams: on a shared-cache miss by the lease
	// holder, and directly whenever the shared cache fails. Required.
	Inner cache.Source

	// URL names the server: redis://[user[:password]@]host:port[/db], or
	// rediss:// for TLS. Required. Never logged: it may hold a password.
	URL string

	// KeyFile holds one base64 32-byte key per line: the first seals and
	// names new entries, all open and name entries to look up, so keys can
	// be rotated. It is re-read every KeyPollInterval; a file that no
	// longer parses is logged and the previous keys stay. Required.
	KeyFile string

	// Prefix starts every name this package writes, so that one server can
	// serve several fleets. Zero means DefaultPrefix.
	Prefix string

	// Timeout bounds each round trip to the server (dial, write, read).
	// Zero means DefaultTimeout.
	Timeout time.Duration

	// Lease is how long a fetch lease lasts without renewal. Its holder
	// renews it every third of Lease while its fetch runs, so a live holder
	// keeps it however long the upstreams take, and a dead one (killed,
	// partitioned) blocks the others for at most Lease. Zero means
	// DefaultLease.
	Lease time.Duration

	// InnerBudget is the longest Inner may need (the pipeline's
	// LongestIssue). A fetch waits for another sidecar's lease only while
	// that much of its context is left, then fetches on its own. Zero: waits
	// to the end of its context.
	InnerBudget time.Duration

	// MinRefreshInterval is the least time between two forced exchanges of
	// one key across the fleet (the cache's -min-refresh-interval). Zero
	// means no fleet-wide limit.
	MinRefreshInterval time.Duration

	// KeyPollInterval is how often KeyFile is checked for a change. Zero
	// means DefaultKeyPollInterval.
	KeyPollInterval time.Duration

	// BreakerFailures is how many failed round trips among the last
	// 2 × BreakerFailures open the circuit breaker (a timeout, a refused
	// connection, an error reply; not a pool wait of this process's own);
	// BreakerDelay is how long it then stays open before one probe may
	// pass. Zero means DefaultBreakerFailures and
	// DefaultBreakerDelay.
	BreakerFailures int
	BreakerDelay    time.Duration

	// Now is the clock. Nil means time.Now. Token expiry and the forced
	// refresh interval are read from it; the server's TTLs run on its own.
	Now func() time.Time

	// Logger receives the server's state changes and key reloads, naming
	// the server by host:port only. Nil discards.
	Logger *slog.Logger

	// MeterProvider receives the metrics (see metrics.go). Nil means none.
	MeterProvider metric.MeterProvider

	// TracerProvider receives one span per fetch and per round trip, named
	// by the command only. Nil means none.
	TracerProvider trace.TracerProvider
}

// CheckURL reports whether raw is a redis:// or rediss:// URL with a host,
// without quoting it back (it may hold a password).
func CheckURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return errors.New("want a redis:// or rediss:// URL")
	}
	if u.Host == "" {
		return errors.New("the URL names no host")
	}
	return nil
}
