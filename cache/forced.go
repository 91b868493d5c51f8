package cache

import (
	"context"
	"time"
)

// Refresh answers a caller whose token was refused (POST /token/refresh, an
// API 401), as the contract's "Forced refresh" says. refused is the access
// token the caller was refused with; "" means the token the cache holds now.
//
//   - A usable cached token other than refused is returned at once: another
//     refresh replaced it meanwhile. Nothing is exchanged.
//   - Inside MinRefreshInterval from the key's last forced exchange —
//     whatever happened since: a failure, a negative entry, an eviction —
//     the caller joins that exchange, or gets its token, or its error
//     wrapped in a *RefreshLimitedError (a Retry-After to the interval's
//     end), with no Source call.
//   - Otherwise one forced exchange starts (ReasonForced, with refused),
//     collapsed with the concurrent forced refreshes of the key. While it
//     runs, Get still serves the refused token: the 401 may have been
//     spurious. If it fails terminally (Config.IsNegative) the refused token
//     is dropped; if it fails transiently the token stays served until its
//     margin, and the caller gets the error.
//
// If ctx ends first, Refresh returns an error wrapping ctx.Err(); the
// exchange goes on and its result is applied.
func (c *Cache) Refresh(ctx context.Context, key Key, refused string) (Token, error) {
	s := c.lockState(key)
	now := c.cfg.Now()
	v := s.view.Load()
	if refused == "" && v.usableUntil != 0 {
		refused = v.tok.AccessToken
	}
	if c.servable(s, v, now) && v.tok.AccessToken != refused {
		s.mu.Unlock()
		v.markServed()
		at := c.clk.on(now, v.wall)
		c.obs.Hit(key, time.Duration(v.usableUntil-at), at >= v.refreshAt)
		tagRequest(ctx, resultNotRefused)
		return v.tok, nil
	}
	if s.forcedRunning {
		// The interval's exchange, or a slow one that outlived it: one
		// forced exchange at a time.
		ch := c.joinFlight(s, flightForced)
		s.mu.Unlock()
		tagRequest(ctx, resultForced)
		tok, err := c.await(ctx, key, ch, false)
		return c.served(s, tok, err)
	}
	if c.forcedWindowOpen(s, now) {
		if s.forced.done {
			until := s.forced.at.Add(c.cfg.MinRefreshInterval)
			tok, err := s.forced.tok, s.forced.err
			s.mu.Unlock()
			c.obs.ForcedRefreshLimited(key)
			tagRequest(ctx, resultRefreshLimited)
			if err == nil && !now.Before(tok.UsableUntil()) {
				err = &ExpiredTokenError{Provider: key.Provider, Tenant: key.Tenant, Lifetime: tok.Lifetime}
			}
			if err != nil {
				return Token{}, &RefreshLimitedError{Provider: key.Provider, Tenant: key.Tenant,
					Err: err, Until: until, RetryAfterHint: until.Sub(now)}
			}
			return c.served(s, tok, nil)
		}
	}
	s.forced = &forcedExchange{at: now}
	req := FetchRequest{Key: key, Reason: ReasonForced, Refused: refused, Current: v.tok}
	ch := c.startFlight(s, flightForced, req, c.detach(ctx), triggerForced)
	if c.cfg.MinRefreshInterval > 0 {
		c.sched.at(s, c.clk.of(now.Add(c.cfg.MinRefreshInterval))) // to release the state after the interval
	}
	s.mu.Unlock()
	c.obs.ForcedRefresh(key)
	tagRequest(ctx, resultForced)
	tok, err := c.await(ctx, key, ch, true)
	return c.served(s, tok, err)
}

// served marks tok, answered to a caller, as served when it is s's current
// token, and passes the answer on.
func (c *Cache) served(s *state, tok Token, err error) (Token, error) {
	if err == nil {
		s.markServedToken(tok)
	}
	return tok, err
}
