package proxy

// This file holds the /proxy/ route of the token listener: a reverse proxy to
// the tenant's Genesys Platform API that adds the tenant's bearer token, as
// shared/docs/contract.md "API proxy" describes.

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// apiProxyRoute is the route pattern of the API proxy, as the request log
// and the telemetry middleware see it (c.Path()).
const apiProxyRoute = apiProxyPrefix + "/*"

// apiProxyMethods are the methods the API proxy forwards; any other (CONNECT,
// TRACE…) is 405 METHOD_NOT_ALLOWED.
var apiProxyMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// Zero values of Config.APIProxyTimeout and Config.APIBodyIdleTimeout.
const (
	defaultAPIProxyTimeout    = 10 * time.Minute
	defaultAPIBodyIdleTimeout = 10 * time.Second
)

// Headers the API proxy handles itself.
const (
	headerAuthorization = "Authorization"
	// headerExpect is answered by the sidecar's own server (100 Continue as
	// soon as the body is read) rather than by the API: the sidecar may
	// answer with an error before reading the body at all.
	headerExpect = "Expect"
)

// apiProxy serves /proxy/*. Immutable after newAPIProxy, so safe for
// concurrent use.
type apiProxy struct {
	cache        TokenCache
	rules        *tenantRules
	tokenTimeout time.Duration // Config.RequestTimeout
	timeout      time.Duration // Config.APIProxyTimeout
	bodyIdle     time.Duration // Config.APIBodyIdleTimeout
	logger       *slog.Logger
	spans        *lazySpans // nil: none started here
	rp           *httputil.ReverseProxy
	// retryBudget bounds the request bodies buffered for 401 retries;
	// nil buffers none.
	retryBudget *retryBudget
}

func newAPIProxy(cfg Config, rules *tenantRules, tokenTimeout time.Duration, logger *slog.Logger, spans *lazySpans) (*apiProxy, error) {
	if cfg.APIProxyTimeout < 0 {
		return nil, errors.New("proxy: Config.APIProxyTimeout is negative")
	}
	if cfg.APIBodyIdleTimeout < 0 {
		return nil, errors.New("proxy: Config.APIBodyIdleTimeout is negative")
	}
	base := cfg.APITransport
	if base == nil {
		base = NewAPITransport()
	}
	p := &apiProxy{
		cache:        cfg.Cache,
		rules:        rules,
		tokenTimeout: tokenTimeout,
		timeout:      cfg.APIProxyTimeout,
		bodyIdle:     cfg.APIBodyIdleTimeout,
		logger:       logger,
		spans:        spans,
	}
	if p.timeout == 0 {
		p.timeout = defaultAPIProxyTimeout
	}
	if p.bodyIdle == 0 {
		p.bodyIdle = defaultAPIBodyIdleTimeout
	}
	switch {
	case cfg.APIRetryBuffer == 0:
		p.retryBudget = newRetryBudget(DefaultAPIRetryBuffer)
	case cfg.APIRetryBuffer > 0:
		p.retryBudget = newRetryBudget(cfg.APIRetryBuffer)
	}
	if err := p.retryBudget.observe(cfg.MeterProvider); err != nil {
		return nil, err
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite:   rewriteAPIRequest,
		Transport: &retryTransport{base: base, cache: cfg.Cache, tokenTimeout: tokenTimeout, logger: logger},
		// FlushInterval 0: a response of known length is copied through
		// the server's buffer; ReverseProxy flushes every write of one of
		// unknown length (chunked) and of text/event-stream by itself.
		ErrorHandler: func(_ http.ResponseWriter, r *http.Request, err error) {
			// Answered by serve, with the JSON error body.
			if call := callOf(r.Context()); call != nil {
				call.err = err
			}
		},
		ErrorLog: log.New(reverseProxyLog{logger}, "", 0),
	}
	return p, nil
}

// reverseProxyLog is the ReverseProxy's error log: a WARN line with fixed
// text, never what the message quotes — the error of reading the API's
// answer, which net/http may have made from the answer's bytes.
type reverseProxyLog struct{ logger *slog.Logger }

func (l reverseProxyLog) Write(p []byte) (int, error) {
	msg := "httputil: reverse proxy error"
	if strings.HasPrefix(string(p), "httputil: ReverseProxy read error during body copy") {
		msg = "httputil: reading the API's answer failed while copying it"
	}
	l.logger.LogAttrs(context.Background(), slog.LevelWarn, msg, slog.String("logger", "httputil.ReverseProxy"))
	return len(p), nil
}

// rewriteAPIRequest turns the app's request into the API request: the
// tenant's API URL with the app's query string as it was sent, the tenant's
// bearer token in place of any Authorization the app sent, and without the
// sidecar's own headers. ReverseProxy has already removed the hop-by-hop
// headers and any X-Forwarded-* and Forwarded the app sent, and adds none.
func rewriteAPIRequest(pr *httputil.ProxyRequest) {
	call := callOf(pr.In.Context())
	u := *call.target
	// Not ReverseProxy's re-encoded query (it rewrites one holding ';' or a
	// bad escape): the query is the API's business, and the sidecar does
	// not read it, so there is no ambiguity to protect against.
	u.RawQuery = pr.In.URL.RawQuery
	pr.Out.URL = &u
	pr.Out.Host = ""
	h := pr.Out.Header
	h.Del(headerTokenRequest)
	h.Del(headerTenantID)
	h.Del(headerExpect)
	h[headerAuthorization] = []string{"Bearer " + call.token.AccessToken}
	if call.body != nil {
		pr.Out.GetBody = call.newBody
	}
}

// serve handles one /proxy/ request. The X-Token-Request check has run
// before, as middleware.
func (p *apiProxy) serve(c echo.Context) error {
	start := time.Now()
	req := c.Request()
	// The token listener's server has read and write timeouts sized for the
	// token API (-request-timeout + 5 s), which would cut an upload or a
	// streamed answer short: a proxied request gets APIProxyTimeout from its
	// start instead. Writers that cannot (a test recorder) are left as they
	// are.
	deadline := start.Add(p.timeout)
	rc := http.NewResponseController(c.Response())
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline)
	if req.Body != nil && req.Body != http.NoBody {
		// A busy connection is never closed to make room for another, so a
		// body that stops arriving must not hold one for all of deadline.
		req.Body = &progressBody{ReadCloser: req.Body, rc: rc, idle: p.bodyIdle, end: deadline}
	}

	key, err := p.rules.proxyKey(req)
	if err != nil {
		return err
	}
	rest, err := proxyPath(req.URL.EscapedPath())
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			ae.tenant = key.Tenant
		}
		return err
	}
	// Every proxied request goes upstream (the API, perhaps the token
	// upstreams): it needs its trace.
	ctx := p.spans.context(c)
	req = c.Request()
	ctx, cancel := context.WithTimeout(ctx, p.tokenTimeout)
	tok, err := p.cache.Get(ctx, key)
	cancel()
	if err != nil {
		return &apiError{tenant: key.Tenant, provider: key.Provider, err: err}
	}
	if tok.AccessToken == "" {
		return &apiError{code: codeInternal, tenant: key.Tenant, provider: key.Provider,
			err: errors.New("proxy: cache returned an empty access token without an error")}
	}
	target, err := apiTarget(tok.APIBaseURL, rest)
	if err != nil {
		return &apiError{code: codeInternal, tenant: key.Tenant, provider: key.Provider, err: err}
	}
	call := &apiCall{key: key, rest: rest, token: tok, target: target}
	defer call.releaseBody(p.retryBudget)
	if err := call.takeBody(req, p.retryBudget); err != nil {
		return &apiError{code: codeInvalidRequest, message: msgProxyBodyUnread, tenant: key.Tenant, err: err}
	}
	if p.logger.Enabled(req.Context(), slog.LevelDebug) {
		c.Set(logTenantKey, key.Tenant)
	}

	ctx, cancel = context.WithDeadline(context.WithValue(req.Context(), apiCallKey{}, call), deadline)
	defer cancel()
	w := &apiResponseWriter{Response: c.Response()}
	// Deferred, so that an answer cut mid-stream is logged too: ReverseProxy
	// then panics with http.ErrAbortHandler, which net/http expects to see.
	defer func() {
		v := recover()
		aborted := v == http.ErrAbortHandler
		if call.err == nil && (v == nil || aborted) {
			p.logProxied(req, w, key.Tenant, call.retried, aborted, start)
		}
		if v != nil {
			panic(v)
		}
	}()
	p.rp.ServeHTTP(w, req.WithContext(ctx))
	if call.err != nil {
		return apiCallError(call)
	}
	return nil
}

// logProxied writes the info line of a request the API answered; aborted
// means the answer was cut short (the API or the app went away mid-stream).
// Like the request log it names the route, never the URL (the query string
// may hold anything), and no header but the tenant.
func (p *apiProxy) logProxied(req *http.Request, w *apiResponseWriter, tenant string, retried, aborted bool, start time.Time) {
	ctx := req.Context()
	if !p.logger.Enabled(ctx, slog.LevelInfo) {
		return
	}
	p.logger.LogAttrs(ctx, slog.LevelInfo, "api request proxied",
		slog.String("method", req.Method),
		slog.String("route", apiProxyRoute),
		slog.Int("status", w.Response.Status),
		slog.Duration("duration", time.Since(start)),
		slog.String("tenant", tenant),
		slog.Bool("retried", retried),
		slog.Bool("aborted", aborted),
	)
}

// Messages of the answers for an API that gave none.
const (
	msgAPIUnreachable = "the Genesys API could not be reached"
	msgAPITimeout     = "the Genesys API did not answer in time"
)

// apiCallError is the answer for a proxied request that got no answer from
// the API: the token API's error when a forced refresh failed; 504 TIMEOUT
// when the API did not answer in time; 502 UPSTREAM_INVALID_RESPONSE when it
// could not be reached. A caller that went away gets its context error, which
// the request log treats as such.
func apiCallError(call *apiCall) error {
	err := call.err
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return &apiError{code: codeTimeout, message: msgAPITimeout, tenant: call.key.Tenant, err: apiFailure(err)}
	}
	return &apiError{code: codeUpstreamInvalidResponse, message: msgAPIUnreachable, tenant: call.key.Tenant, err: apiFailure(err)}
}

// apiFailure is what the request log says about a transport failure of the
// API request. Never the transport's own text: a *url.Error holds the URL,
// query string included, and net/http quotes the bytes of a malformed
// answer ("malformed HTTP response \"…\""), which may be a token. An error
// that says it is redacted (cmd's transport, upstream.RedactingTransport)
// has fixed words for text and is kept; any other becomes fixed words.
func apiFailure(err error) error {
	var redacted interface{ Redacted() bool }
	if errors.As(err, &redacted) && redacted.Redacted() {
		return fmt.Errorf("API request: %w", redacted.(error))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errAPITimeout
	}
	return errAPITransport
}

// Causes of apiFailure for errors that are not redacted.
var (
	errAPITimeout   = errors.New("API request: network timeout")
	errAPITransport = errors.New("API request: transport error (not shown: it may quote the API's answer)")
)

// apiResponseWriter passes the API's informational (1xx) answers straight to
// the server, and everything else to echo's Response: echo would take a
// 1xx for the final status and drop the real one.
type apiResponseWriter struct {
	*echo.Response
}

func (w *apiResponseWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols && !w.Response.Committed {
		w.Response.Writer.WriteHeader(code)
		return
	}
	w.Response.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the server's writer (flushes,
// deadlines, hijacking for a protocol switch).
func (w *apiResponseWriter) Unwrap() http.ResponseWriter { return w.Response }
