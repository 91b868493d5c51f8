package cache

import "time"

// The refresh schedule of a token, as pure functions of its lifetime and
// the clock's reading: no state, no clock, table-tested in schedule_test.go.

// maxRefreshShare is how far along the way from a token's issue to its
// safety margin the refresh point may lie at the latest: a -refresh-at or a
// lifetime that would put it later is clamped there, so that every token gets
// a refresh ahead with a tenth of its usable time left to finish it.
const maxRefreshShare = 0.9

// minRetryDelay is the shortest wait before a failed refresh ahead is tried
// again.
const minRetryDelay = time.Second

// refreshPoint is when a refresh ahead of tok's expiry starts: once the
// fraction refreshAt of its lifetime has passed, clamped to at most
// maxRefreshShare of the way to its safety margin, then moved earlier by
// jitter·r of the lifetime (r in [0, 1)), never before the token was issued.
func refreshPoint(tok Token, refreshAt, jitter, r float64) time.Time {
	issued := tok.ExpiresAt.Add(-tok.Lifetime)
	usable := tok.UsableUntil().Sub(issued)
	at := min(time.Duration(refreshAt*float64(tok.Lifetime)), time.Duration(maxRefreshShare*float64(usable)))
	at -= time.Duration(jitter * r * float64(tok.Lifetime))
	return issued.Add(max(at, 0))
}

// retryDelay is how long a failed refresh ahead waits before the next try,
// at now, of a token usable until usableUntil: interval or a quarter of the
// time left, whichever is shorter, at least minRetryDelay. ok is false when
// the next try would come at or after usableUntil: the token then expires and
// the next request fetches.
func retryDelay(now, usableUntil time.Time, interval time.Duration) (d time.Duration, ok bool) {
	left := usableUntil.Sub(now)
	d = max(min(interval, left/4), minRetryDelay)
	return d, d < left
}
