package cache

import (
	"context"
	"time"
)

// Key names one cache entry: a tenant's token for one provider.
type Key struct {
	Provider string
	Tenant   string
}

// Token is an access token as the cache holds and serves it.
type Token struct {
	// AccessToken is the bearer token itself. Never log it.
	AccessToken string
	// TokenType is the OAuth token type, normally "bearer".
	TokenType string
	// ExpiresAt is when the upstream says the token stops working.
	ExpiresAt time.Time
	// Lifetime is the whole lifetime the upstream granted (expires_in); the
	// safety margin and the refresh-ahead point are fractions of it.
	Lifetime time.Duration
	// APIBaseURL is the API host the token is valid for (e.g.
	// "https://api.mypurecloud.ie"); empty when the provider has none. The API
	// proxy uses it so that a warm cache needs no upstream call to route.
	APIBaseURL string
}

// maxMargin caps the safety margin; see Margin.
const maxMargin = 30 * time.Second

// Margin is the safety margin of a token with the given lifetime:
// min(30 s, 10 % of the lifetime). A token is never served once inside it, so
// that a caller never receives a token that expires while it is in flight.
func Margin(lifetime time.Duration) time.Duration {
	return min(maxMargin, lifetime/10)
}

// UsableUntil is the last instant at which the token may be served:
// ExpiresAt minus the safety margin.
func (t Token) UsableUntil() time.Time {
	return t.ExpiresAt.Add(-Margin(t.Lifetime))
}

// Reason says why the cache fetches a key.
type Reason uint8

const (
	// ReasonMiss: the cache holds no usable token for the key.
	ReasonMiss Reason = iota
	// ReasonAhead: the held token is past its refresh point and is still
	// served while the fetch runs (refresh ahead, by a request or the timer).
	ReasonAhead
	// ReasonForced: a caller was refused with FetchRequest.Refused and asks
	// for a token other than it.
	ReasonForced
)

// String names the reason as metrics and spans do: "miss", "ahead", "forced".
func (r Reason) String() string {
	switch r {
	case ReasonAhead:
		return "ahead"
	case ReasonForced:
		return "forced"
	default:
		return "miss"
	}
}

// FetchRequest is what the cache asks of a Source.
type FetchRequest struct {
	Key    Key
	Reason Reason
	// Current is the token the cache holds for Key when the fetch starts; the
	// zero Token when it holds none. A layer that shares tokens between pods
	// adopts only a token that is newer than Current (a later ExpiresAt).
	Current Token
	// Refused is the access token the caller was refused with, for
	// ReasonForced; empty otherwise. A Source must answer a token other than
	// it. Never log it.
	Refused string
}

// Source fetches a fresh token for a key: for Genesys, the Tenant Service
// fetch followed by the client-credentials exchange.
//
// Fetch must be safe for concurrent use. For one key the cache runs at most
// one normal fetch (ReasonMiss or ReasonAhead) and one forced fetch at a
// time, under a context that callers giving up do not cancel and Close
// does. Their results are applied in the order the fetches started.
type Source interface {
	Fetch(ctx context.Context, req FetchRequest) (Token, error)
}

// LimitedError is implemented by a Source error that refused a forced fetch
// without an exchange because the key's forced-refresh interval, kept
// elsewhere (another pod's forced exchange, in a shared cache), runs until
// LimitedUntil. The cache's own interval for the key then ends there too,
// rather than MinRefreshInterval after the refused fetch: the two never add
// up.
type LimitedError interface {
	error
	LimitedUntil() time.Time
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, req FetchRequest) (Token, error)

// Fetch calls f.
func (f SourceFunc) Fetch(ctx context.Context, req FetchRequest) (Token, error) { return f(ctx, req) }
