package cache

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"
)

// flightKind tells a key's two flights apart: a normal one (miss or refresh
// ahead) and a forced one, which never joins a normal one, whose token may be
// the very one the caller was refused with.
type flightKind uint8

const (
	flightNormal flightKind = iota
	flightForced
)

// flight is the result of one shared fetch, as its callers receive it.
type flight struct {
	tok Token
	// span is the fetch's span, which collapsed callers link to.
	span trace.SpanContext
	// failed is the Source's error even when the flight answered a token
	// (one another fetch stored meanwhile): a refresh ahead retries on it.
	failed error
	// s is the flight's state. The singleflight group holds the flight's
	// value until the flight leaves it, so s lives while the flight's name,
	// which holds s's address, is in use (see flightName).
	s *state
}

// flightContext is the context of a fetch that a request leads: the
// leader's values (its trace: the fetch's span is a child of the request's),
// but the cache's cancellation, not the leader's — callers giving up must not
// cancel the fetch for everyone else, and Close must.
type flightContext struct {
	context.Context                 // the cache's background context
	values          context.Context // the leader's
}

func (f flightContext) Value(key any) any { return f.values.Value(key) }

// detach is the context of a fetch that the request ctx leads.
func (c *Cache) detach(ctx context.Context) context.Context {
	return flightContext{Context: c.bg, values: ctx}
}

// flightName names a flight in the singleflight group: its kind, its key,
// its state and its sequence number, so that no caller joins a flight that
// has already applied its outcome. The state is named by its address: a
// flight of a state released for its key (whose next state counts its
// flights from one again) stays in the group until just after its
// function returns, and its value (flight.s) keeps its state alive until it
// leaves, so no other state has that address while the name is in use.
func flightName(s *state, kind flightKind, seq uint32) string {
	prefix := "get\x00"
	if kind == flightForced {
		prefix = "force\x00"
	}
	return prefix + s.key.Provider + "\x00" + s.key.Tenant + "\x00" +
		strconv.FormatUint(uint64(uintptr(unsafe.Pointer(s))), 16) + "\x00" + strconv.FormatUint(uint64(seq), 10)
}

// startFlight starts a new flight of kind for s, fetching req. Called with
// s.mu held; the flight takes s.mu only to apply its outcome, so a caller
// that sees it running under s.mu can still join it.
//
// parent is the fetch's context: c.bg, or detach of the leader's.
func (c *Cache) startFlight(s *state, kind flightKind, req FetchRequest, parent context.Context, trigger string, links ...trace.Link) <-chan singleflight.Result {
	var seq uint32
	if kind == flightForced {
		s.forcedSeq++
		seq = s.forcedSeq
		s.forcedRunning = true
	} else {
		s.normalSeq++
		seq = s.normalSeq
		s.normalRunning = true
	}
	from := s.gen
	return c.group.DoChan(flightName(s, kind, seq), func() (any, error) {
		f, err := c.fetch(parent, s, kind, seq, from, req, trigger, links)
		f.s = s
		return f, err
	})
}

// joinFlight joins s's running flight of kind. Called with s.mu held and
// the flight running.
func (c *Cache) joinFlight(s *state, kind flightKind) <-chan singleflight.Result {
	seq := s.normalSeq
	if kind == flightForced {
		seq = s.forcedSeq
	}
	return c.group.DoChan(flightName(s, kind, seq), func() (any, error) {
		// Unreachable: the flight clears its running flag under s.mu
		// before it ends, and joiners hold s.mu.
		return flight{}, fmt.Errorf("cache: joined a finished fetch for tenant %q", s.key.Tenant)
	})
}

// await waits for a flight or for ctx. leader is false for a caller that
// joined a flight another started.
func (c *Cache) await(ctx context.Context, key Key, ch <-chan singleflight.Result, leader bool) (Token, error) {
	select {
	case r := <-ch:
		f, _ := r.Val.(flight)
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

// fetch runs one Source fetch as the flight's leader and applies its
// outcome to s if s is still at generation from. It waits for a fetch slot
// at most FetchTimeout, then gives the Source FetchTimeout; running out of
// either is an *UnavailableError (503), not the caller's TIMEOUT.
func (c *Cache) fetch(parent context.Context, s *state, kind flightKind, seq, from uint32, req FetchRequest, trigger string, links []trace.Link) (f flight, err error) {
	key := s.key
	ctx, span := c.tracer.Start(parent, "cache.fetch",
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("token_sidecar.provider", key.Provider),
			attribute.String("token_sidecar.tenant", key.Tenant),
			attribute.String("token_sidecar.cache.trigger", trigger),
		))
	f.span = span.SpanContext()
	defer func() {
		if err != nil {
			// Error texts of the Source are free of secrets (upstream's
			// contract); the tenant and provider are not secret.
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()

	tok, err := c.callSource(ctx, req)
	now := c.cfg.Now()
	if err == nil && !now.Before(tok.UsableUntil()) {
		// Already inside its safety margin (a lifetime shorter than the
		// fetch took): serving it would break the margin's promise.
		err = &ExpiredTokenError{Provider: key.Provider, Tenant: key.Tenant, Lifetime: tok.Lifetime}
	}
	f.failed = err
	f.tok, err = c.apply(s, kind, seq, from, req.Reason, tok, err, now)
	c.release(s)
	return f, err
}

// callSource waits for a slot and calls the Source under FetchTimeout,
// turning a panic into an error and a deadline into an *UnavailableError.
func (c *Cache) callSource(ctx context.Context, req FetchRequest) (tok Token, err error) {
	key := req.Key
	if c.fetchSlots != nil {
		wait := time.NewTimer(c.cfg.FetchTimeout)
		select {
		case c.fetchSlots <- struct{}{}:
			wait.Stop()
			defer func() { <-c.fetchSlots }()
		case <-wait.C:
			return Token{}, &UnavailableError{Provider: key.Provider, Tenant: key.Tenant,
				Why: fmt.Sprintf("all %d fetch slots stayed busy for %s", cap(c.fetchSlots), c.cfg.FetchTimeout)}
		case <-ctx.Done():
			wait.Stop()
			return Token{}, &UnavailableError{Provider: key.Provider, Tenant: key.Tenant, Why: "the cache is closing", Err: ctx.Err()}
		}
	}
	fctx, cancel := context.WithTimeout(ctx, c.cfg.FetchTimeout)
	defer cancel()
	defer func() {
		// A panic inside a singleflight DoChan function kills the process.
		if p := recover(); p != nil {
			c.cfg.Logger.ErrorContext(ctx, "token source panicked", "provider", key.Provider, "tenant", key.Tenant, "panic", fmt.Sprint(p))
			tok, err = Token{}, fmt.Errorf("cache: token source panicked for tenant %q", key.Tenant)
		}
	}()
	tok, err = c.cfg.Source.Fetch(fctx, req)
	if err != nil && fctx.Err() != nil && !hasCode(err) {
		err = &UnavailableError{Provider: key.Provider, Tenant: key.Tenant,
			Why: fmt.Sprintf("the fetch ran out of its %s", c.cfg.FetchTimeout), Err: err}
	}
	return tok, err
}

// apply writes a fetch's outcome to s — only if s is still at generation
// from, so that writes apply in the order their fetches started — and says
// what the flight answers:
//
//   - a token: stored; answered even when a later write won meanwhile;
//   - a miss's error: cached when it is negative;
//   - a forced refresh's terminal error: the refused token is dropped (and
//     the error cached when it is negative); a transient one leaves the
//     token served until its margin;
//   - a refresh ahead's error: the current token stays.
//
// An error is answered as the state's usable token when it holds one that
// is not the refused one (another fetch stored it meanwhile).
func (c *Cache) apply(s *state, kind flightKind, seq, from uint32, reason Reason, tok Token, err error, now time.Time) (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh := s.gen == from && !s.dead
	switch {
	case err == nil && fresh:
		c.storeToken(s, tok, now)
	case err == nil || !fresh:
	case reason == ReasonForced && c.terminal(err):
		c.storeNegative(s, err, now)
	case reason == ReasonMiss && c.negative(err):
		c.storeNegative(s, err, now)
	}
	if err != nil {
		if v := s.view.Load(); v.usable(c.clk.on(now, v.wall)) && (reason != ReasonForced || v.gen != from) {
			tok, err = v.tok, nil
		}
	}
	if kind == flightForced {
		s.forcedRunning = false
		if s.forcedSeq == seq {
			s.forced.done, s.forced.tok, s.forced.err = true, tok, err
			var limited LimitedError
			if errors.As(err, &limited) {
				// No exchange ran here: the interval is the Source's.
				s.forced.at = limited.LimitedUntil().Add(-c.cfg.MinRefreshInterval)
			}
		}
	} else {
		s.normalRunning = false
	}
	return tok, err
}

// negative reports whether err may be cached for NegativeTTL.
func (c *Cache) negative(err error) bool {
	return c.cfg.NegativeTTL > 0 && c.terminal(err)
}

// terminal reports whether err is one retrying cannot fix
// (Config.IsNegative): a forced refresh failing so drops the refused token.
func (c *Cache) terminal(err error) bool {
	return c.cfg.IsNegative != nil && c.cfg.IsNegative(err)
}
