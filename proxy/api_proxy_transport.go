package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/token-sidecar/token-sidecar/cache"
)

// Timeouts of NewAPITransport. There is deliberately no timeout on the
// whole exchange: a response body may stream for as long as the API sends
// it, within Config.APIProxyTimeout.
const (
	apiDialTimeout           = 10 * time.Second
	apiTLSHandshakeTimeout   = 10 * time.Second
	apiResponseHeaderTimeout = 30 * time.Second
	apiIdleConnTimeout       = 90 * time.Second
)

// NewAPITransport returns the transport the /proxy/ route uses when
// Config.APITransport is nil: a dedicated *http.Transport, not shared with the
// Tenant Service and login clients, that honours HTTPS_PROXY / HTTP_PROXY /
// NO_PROXY, waits at most 30 s for the API's response headers and puts no
// bound on the time the body takes.
//
// It does not ask for compression by itself (DisableCompression): the app's
// own Accept-Encoding goes to the API, and the answer comes back as the API
// encoded it, never transparently decompressed.
func NewAPITransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: apiDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       apiIdleConnTimeout,
		TLSHandshakeTimeout:   apiTLSHandshakeTimeout,
		ResponseHeaderTimeout: apiResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// maxReplayBody is the largest request body buffered so that the request can
// be sent again after a 401 (contract: "bodies up to 1 MiB").
const maxReplayBody = 1 << 20

// apiCall is the state of one proxied request, shared by the handler, the
// ReverseProxy's Rewrite and ErrorHandler and the retrying transport through
// the request context. All of them run on the handler's goroutine, one after
// the other, so it needs no lock.
type apiCall struct {
	key    cache.Key
	rest   string      // escaped path after /proxy
	token  cache.Token // the token of the latest attempt
	target *url.URL    // the latest attempt's URL, without query

	// body is the whole request body when replayable and there is one.
	body []byte
	// replayable is true when the request can be sent again: no body, or
	// one of at most maxReplayBody bytes, buffered in body.
	replayable bool
	// buffered is the share of the retry budget the body's buffer holds,
	// given back by releaseBody.
	buffered int64

	retried bool  // a second attempt was sent
	err     error // set by the ErrorHandler: no answer came from the API
}

type apiCallKey struct{}

func callOf(ctx context.Context) *apiCall {
	call, _ := ctx.Value(apiCallKey{}).(*apiCall)
	return call
}

// retryTransport sends a proxied request through base and, when the API
// answers 401, force-refreshes the tenant's token (cache.Refresh: collapsed
// with concurrent refreshes, at most one forced exchange per tenant per
// minimum refresh interval) and sends the request once more with the new
// token, if the request is replayable and the token did change. A token that
// did not change means the refresh was rate-limited: the API would refuse it
// again, so the 401 goes back to the app. Never more than one retry.
//
// For a request that cannot be replayed, a 401 still refreshes the token, so
// that the app's own retry gets a new one, and the 401 goes back.
type retryTransport struct {
	base         http.RoundTripper
	cache        TokenCache
	tokenTimeout time.Duration
	logger       *slog.Logger
}

func (t *retryTransport) RoundTrip(out *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(out)
	call := callOf(out.Context())
	if err != nil || resp.StatusCode != http.StatusUnauthorized || call == nil || call.retried {
		return resp, err
	}
	ctx, cancel := context.WithTimeout(out.Context(), t.tokenTimeout)
	tok, err := t.cache.Refresh(ctx, call.key, call.token.AccessToken)
	cancel()
	if !call.replayable {
		if err != nil {
			t.logger.LogAttrs(out.Context(), slog.LevelWarn, "token refresh after an API 401 failed",
				slog.String("tenant", call.key.Tenant), slog.String("error", err.Error()))
		}
		return resp, nil
	}
	if err != nil {
		// The token the API refused cannot be replaced: say why, with the
		// token API's error, rather than pass on a 401 the app cannot fix.
		discard(resp)
		return nil, &apiError{tenant: call.key.Tenant, provider: call.key.Provider, err: err}
	}
	if tok.AccessToken == "" || tok.AccessToken == call.token.AccessToken {
		return resp, nil // rate-limited: the same token would be refused again
	}
	target, terr := apiTarget(tok.APIBaseURL, call.rest)
	if terr != nil {
		return resp, nil
	}
	discard(resp)
	retry := out.Clone(out.Context())
	target.RawQuery = out.URL.RawQuery
	retry.URL, retry.Host = target, ""
	retry.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	retry.Body, _ = call.newBody()
	retry.GetBody = call.newBody
	call.token, call.target, call.retried = tok, target, true
	return t.base.RoundTrip(retry)
}

// discard drains a little of a response that will not be used, so that its
// connection can be reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
