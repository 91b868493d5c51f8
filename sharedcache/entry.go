package sharedcache

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// sharedEntry is what one entry holds once opened: the token and, when a
// forced refresh fetched it, when that forced refresh claimed the fleet's
// -min-refresh-interval.
type sharedEntry struct {
	token cache.Token
	// forcedAt is the claim time (Unix milliseconds) of the forced refresh
	// that fetched the token; zero for a token fetched on a miss or ahead.
	forcedAt int64
}

// entryJSON is sharedEntry's sealed plaintext. Short field names: it is
// written once per fetch and read on every shared lookup.
type entryJSON struct {
	AccessToken string `json:"t"`
	TokenType   string `json:"y,omitempty"`
	ExpiresAt   int64  `json:"e"` // Unix nanoseconds
	Lifetime    int64  `json:"l"` // nanoseconds
	APIBaseURL  string `json:"a,omitempty"`
	ForcedAt    int64  `json:"f,omitempty"`
}

func (e sharedEntry) marshal() []byte {
	b, _ := json.Marshal(entryJSON{
		AccessToken: e.token.AccessToken,
		TokenType:   e.token.TokenType,
		ExpiresAt:   e.token.ExpiresAt.UnixNano(),
		Lifetime:    int64(e.token.Lifetime),
		APIBaseURL:  e.token.APIBaseURL,
		ForcedAt:    e.forcedAt,
	}) // cannot fail: strings and integers only
	return b
}

var errBadEntry = errors.New("sharedcache: the entry opened but is not a token")

func unmarshalEntry(b []byte) (sharedEntry, error) {
	var j entryJSON
	if err := json.Unmarshal(b, &j); err != nil || j.AccessToken == "" || j.Lifetime <= 0 {
		return sharedEntry{}, errBadEntry
	}
	return sharedEntry{
		token: cache.Token{
			AccessToken: j.AccessToken,
			TokenType:   j.TokenType,
			ExpiresAt:   time.Unix(0, j.ExpiresAt),
			Lifetime:    time.Duration(j.Lifetime),
			APIBaseURL:  j.APIBaseURL,
		},
		forcedAt: j.ForcedAt,
	}, nil
}
