package cache

import "time"

// Observer is told about cache events, to count them in metrics or traces.
// Its methods are called on the request path, concurrently, and must be
// cheap and safe for concurrent use.
type Observer interface {
	// Hit: a cached token was served; remaining is the time left until its
	// safety margin. stale reports that the token is past its refresh point
	// (a refresh runs or has failed).
	Hit(key Key, remaining time.Duration, stale bool)
	// Miss: no usable token was cached; the caller waits for a fetch.
	Miss(key Key)
	// NegativeHit: a cached error was returned without calling the Source.
	NegativeHit(key Key)
	// Collapsed: a caller joined a fetch another caller had started.
	Collapsed(key Key)
	// RefreshAhead: a background refresh started before expiry, on a
	// request.
	RefreshAhead(key Key)
	// RefreshTimer: a background refresh started before expiry by the
	// cache's own timer, for a token in use that no request came for.
	RefreshTimer(key Key)
	// ForcedRefresh: a forced refresh fetch started.
	ForcedRefresh(key Key)
	// ForcedRefreshLimited: a forced refresh inside the minimum interval got
	// the previous forced refresh's token instead of a new fetch.
	ForcedRefreshLimited(key Key)
	// Evicted: an entry was dropped because the cache was full.
	Evicted(key Key)
}

type nopObserver struct{}

func (nopObserver) Hit(Key, time.Duration, bool) {}
func (nopObserver) Miss(Key)                     {}
func (nopObserver) NegativeHit(Key)              {}
func (nopObserver) Collapsed(Key)                {}
func (nopObserver) RefreshAhead(Key)             {}
func (nopObserver) RefreshTimer(Key)             {}
func (nopObserver) ForcedRefresh(Key)            {}
func (nopObserver) ForcedRefreshLimited(Key)     {}
func (nopObserver) Evicted(Key)                  {}
