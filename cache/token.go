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

// Source fetches a fresh token for a key: for Genesys, the Tenant Service
// fetch followed by the client-credentials exchange.
//
// Fetch must be safe for concurrent use. The cache calls it at most once at a
// time per key, under a context that callers giving up do not cancel.
type Source interface {
	Fetch(ctx context.Context, key Key) (Token, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, key Key) (Token, error)

// Fetch calls f.
func (f SourceFunc) Fetch(ctx context.Context, key Key) (Token, error) { return f(ctx, key) }
