package sharedcache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// errBreakerOpen reports a command not sent because the circuit breaker is
// open: the server failed too often lately.
var errBreakerOpen = errors.New("sharedcache: circuit breaker open")

// Lua scripts for the lease: only its owner renews or releases it (redis.io,
// "Distributed locks with Redis"). A single server is enough: a duplicate
// exchange is harmless, so the lease saves exchanges, it does not guard
// safety.
var (
	// release also tells every sidecar waiting for the lease (ARGV[2] is
	// the notification channel), whether or not a token was shared.
	releaseScript = redis.NewScript(`local n = 0
if redis.call("GET", KEYS[1]) == ARGV[1] then n = redis.call("DEL", KEYS[1]) end
redis.call("PUBLISH", ARGV[2], KEYS[1])
return n`)
	renewScript = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
)

// store is the Redis side: every command under the per-command timeout,
// through the circuit breaker, timed and traced by its name only (never its
// arguments: names, sealed values, lease owners).
type store struct {
	rdb     *redis.Client
	server  string // host:port, for logs and spans; never the password
	timeout time.Duration
	breaker circuitbreaker.CircuitBreaker[any]
	tracer  trace.Tracer
	metrics *metrics
}

// do runs one round trip to the server. A reply of "no such key"
// (redis.Nil) is a success. Any other error is the server's fault and counts
// against the breaker, unless the caller's own context ended or this
// process had no free connection (see below).
func (s *store) do(ctx context.Context, command string, fn func(ctx context.Context) error) error {
	if !s.breaker.TryAcquirePermit() {
		return errBreakerOpen
	}
	probe := s.breaker.State() == circuitbreaker.HalfOpenState
	ctx, span := s.tracer.Start(ctx, "redis "+command, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("db.system.name", "redis"),
			attribute.String("db.operation.name", command),
			attribute.String("server.address", s.server),
		))
	defer span.End()
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	start := time.Now()
	err := fn(cctx)
	cancel()
	failed := err != nil && !errors.Is(err, redis.Nil)
	s.metrics.command(command, time.Since(start), failed)
	switch {
	case !failed:
		s.breaker.RecordSuccess()
	case ctx.Err() != nil, errors.Is(err, redis.ErrPoolTimeout):
		// The caller gave up, or this process had all its connections
		// busy (a burst on a starved CPU): that says nothing about the
		// server, so a closed breaker records nothing. A half-open one's
		// probe learned nothing either: it must not close the breaker, and
		// must give its permit back, so it counts as a failure (the next
		// probe comes after the breaker's delay). The caller falls back.
		if probe {
			s.breaker.RecordFailure()
		}
		span.SetStatus(codes.Error, err.Error())
	default:
		s.breaker.RecordFailure()
		// Redis error texts carry no command arguments; they may name the
		// server's address, never its password.
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// get returns the values of names, nil for a missing one.
func (s *store) get(ctx context.Context, names []string) ([][]byte, error) {
	var vals []any
	err := s.do(ctx, "MGET", func(ctx context.Context) (err error) {
		vals, err = s.rdb.MGet(ctx, names...).Result()
		return err
	})
	if err != nil {
		return nil, err
	}
	return bytesOf(vals)
}

// poll returns the values of names and the lease's remaining time in one
// round trip: a negative ttl is -2 when no lease is held, -1 when the lease
// has no expiry (garbage: leases are always set with one).
func (s *store) poll(ctx context.Context, names []string, lease string) (vals [][]byte, ttl time.Duration, err error) {
	var mget *redis.SliceCmd
	var pttl *redis.DurationCmd
	err = s.do(ctx, "MGET+PTTL", func(ctx context.Context) error {
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			mget = p.MGet(ctx, names...)
			pttl = p.PTTL(ctx, lease)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if vals, err = bytesOf(mget.Val()); err != nil {
		return nil, 0, err
	}
	// go-redis returns PTTL's -1 and -2 as that many nanoseconds.
	return vals, pttl.Val(), nil
}

func bytesOf(vals []any) ([][]byte, error) {
	out := make([][]byte, len(vals))
	for i, v := range vals {
		switch v := v.(type) {
		case nil:
		case string:
			out[i] = []byte(v)
		default:
			return nil, fmt.Errorf("sharedcache: MGET answered a %T", v)
		}
	}
	return out, nil
}

// acquire takes the lease for ttl if no one holds it.
func (s *store) acquire(ctx context.Context, lease, owner string, ttl time.Duration) (bool, error) {
	var ok bool
	err := s.do(ctx, "SET NX", func(ctx context.Context) (err error) {
		ok, err = s.rdb.SetNX(ctx, lease, owner, ttl).Result()
		return err
	})
	return ok, err
}

// renew extends the lease by ttl if owner still holds it.
func (s *store) renew(ctx context.Context, lease, owner string, ttl time.Duration) (bool, error) {
	var n int64
	err := s.do(ctx, "EVALSHA renew", func(ctx context.Context) (err error) {
		n, err = renewScript.Run(ctx, s.rdb, []string{lease}, owner, ttl.Milliseconds()).Int64()
		return err
	})
	return n == 1, err
}

// release drops the lease if owner still holds it, and publishes its name
// on channel.
func (s *store) release(ctx context.Context, lease, owner, channel string) error {
	return s.do(ctx, "EVALSHA release", func(ctx context.Context) error {
		return releaseScript.Run(ctx, s.rdb, []string{lease}, owner, channel).Err()
	})
}

// put stores a sealed value that expires after ttl.
func (s *store) put(ctx context.Context, name string, sealed []byte, ttl time.Duration) error {
	return s.do(ctx, "SET", func(ctx context.Context) error {
		return s.rdb.Set(ctx, name, sealed, ttl).Err()
	})
}

// claim sets marker to now (Unix milliseconds) for ttl unless it is set; it
// reports whether it did and, if not, the time the marker holds.
func (s *store) claim(ctx context.Context, marker string, now time.Time, ttl time.Duration) (won bool, since int64, err error) {
	ms := now.UnixMilli()
	err = s.do(ctx, "SET NX", func(ctx context.Context) (err error) {
		won, err = s.rdb.SetNX(ctx, marker, ms, ttl).Result()
		return err
	})
	if err != nil || won {
		return won, ms, err
	}
	var v string
	err = s.do(ctx, "GET", func(ctx context.Context) (err error) {
		v, err = s.rdb.Get(ctx, marker).Result()
		return err
	})
	if errors.Is(err, redis.Nil) {
		// Expired between the two commands: the interval is over. One more
		// try; should that lose too, the other claimant's time is unknown
		// and the interval is taken to have just started.
		err = s.do(ctx, "SET NX", func(ctx context.Context) (err error) {
			won, err = s.rdb.SetNX(ctx, marker, ms, ttl).Result()
			return err
		})
		return won, ms, err
	}
	if err != nil {
		return false, 0, err
	}
	since, perr := strconv.ParseInt(v, 10, 64)
	if perr != nil {
		return false, 0, fmt.Errorf("sharedcache: the forced-refresh marker holds garbage")
	}
	return false, since, nil
}
