package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/token-sidecar/token-sidecar/cache"
)

// Error codes of the JSON error body. The first nine are the contract's
// (shared/docs/contract.md, "Errors"); the last three cover what the contract
// leaves to us: unknown paths, wrong methods and bugs.
const (
	codeInvalidRequest           = "INVALID_REQUEST"
	codeRequestHeaderRequired    = "REQUEST_HEADER_REQUIRED"
	codeTenantNotAllowed         = "TENANT_NOT_ALLOWED"
	codeCredentialsNotFound      = "CREDENTIALS_NOT_FOUND"
	codeOAuthInvalidGrant        = "OAUTH_INVALID_GRANT"
	codeUpstreamInvalidResponse  = "UPSTREAM_INVALID_RESPONSE"
	codeTenantServiceUnavailable = "TENANT_SERVICE_UNAVAILABLE"
	codeOAuthExchangeFailed      = "OAUTH_EXCHANGE_FAILED"
	codeTimeout                  = "TIMEOUT"
	codeNotFound                 = "NOT_FOUND"
	codeMethodNotAllowed         = "METHOD_NOT_ALLOWED"
	codeInternal                 = "INTERNAL_ERROR"
)

// errorTable is THE table from error code to HTTP status and the fixed,
// human message of the JSON error body. Messages never hold credentials,
// tokens or upstream bodies; the proxy adds at most the tenant and provider,
// which are validated and not secret. ok is false for a code the table does not
// know, which the caller answers as INTERNAL_ERROR.
func errorTable(code string) (status int, message string, ok bool) {
	switch code {
	case codeInvalidRequest:
		return http.StatusBadRequest, "invalid request: the Tenant Service refused it", true
	case codeRequestHeaderRequired:
		return http.StatusForbidden, "the header X-Token-Request: true is required", true
	case codeTenantNotAllowed:
		return http.StatusForbidden, "tenant not allowed on this sidecar", true
	case codeCredentialsNotFound:
		return http.StatusNotFound, "no credentials found for this tenant and provider", true
	case codeOAuthInvalidGrant:
		return http.StatusBadGateway, "the identity provider rejected the tenant's client credentials", true
	case codeUpstreamInvalidResponse:
		return http.StatusBadGateway, "an upstream service gave an invalid answer", true
	case codeTenantServiceUnavailable:
		return http.StatusServiceUnavailable, "the Tenant Service is unavailable; retry later", true
	case codeOAuthExchangeFailed:
		return http.StatusServiceUnavailable, "the token exchange with the identity provider failed; retry later", true
	case codeTimeout:
		return http.StatusGatewayTimeout, "no token within the request timeout; the exchange goes on, retry shortly", true
	case codeNotFound:
		return http.StatusNotFound, "no such endpoint", true
	case codeMethodNotAllowed:
		return http.StatusMethodNotAllowed, "method not allowed on this endpoint", true
	case codeInternal:
		return http.StatusInternalServerError, "internal error", true
	}
	return 0, "", false
}

// Retry-After of a 503: the error's own hint when it has one, else
// defaultRetryAfter; rounded up to whole seconds and kept within
// [1 s, maxRetryAfter]. The default is not shorter because the sidecar has
// already retried the upstream before answering 503: a caller that comes back
// at once only multiplies the load on an upstream that is failing.
const (
	defaultRetryAfter = 5 * time.Second
	maxRetryAfter     = 60 * time.Second
)

// retryAfterSeconds is the Retry-After value, in seconds, for a hint.
func retryAfterSeconds(hint time.Duration) int {
	if hint <= 0 {
		hint = defaultRetryAfter
	}
	hint = min(hint, maxRetryAfter)
	return max(1, int((hint+time.Second-1)/time.Second))
}

// apiError is an error answer the proxy decides on: either with its own code
// and message (a refused request), or around an error of the cache, whose code
// the table then derives. It carries the tenant and provider, when they were
// valid, for the message and the request log.
type apiError struct {
	code     string // "" → derived from err
	message  string // "" → the table's message
	tenant   string // valid tenant ID or ""
	provider string // known provider or ""
	err      error  // the cache's error; never shown to the caller
}

func invalidRequest(message string) *apiError {
	return &apiError{code: codeInvalidRequest, message: message}
}

func (e *apiError) Error() string {
	s := "proxy"
	if e.code != "" {
		s += ": " + e.code
	}
	if e.tenant != "" {
		s += ": tenant " + e.tenant
	}
	if e.err != nil {
		s += ": " + e.err.Error()
	}
	return s
}

func (e *apiError) Unwrap() error { return e.err }

// errPanic stands for a recovered panic; it answers 500 INTERNAL_ERROR.
var errPanic = errors.New("proxy: handler panicked")

// problem is one error answer: what the caller sees and what the log gets.
type problem struct {
	status     int
	code       string
	message    string
	retryAfter int    // seconds; set on every 503
	tenant     string // for the log; "" when unknown or invalid
}

// classify turns any error a handler or middleware returns into its answer.
// The order matters: a code from the cache (an upstream error) wins over a
// context error it may wrap (a per-attempt timeout is still
// TENANT_SERVICE_UNAVAILABLE); a bare context error is the caller's wait
// running out, TIMEOUT.
func classify(err error) problem {
	var p problem
	var ae *apiError
	if errors.As(err, &ae) {
		p.code, p.message, p.tenant = ae.code, ae.message, ae.tenant
	}
	var coded interface{ ErrorCode() string }
	var he *echo.HTTPError
	switch {
	case p.code != "":
	case errors.As(err, &coded):
		p.code = coded.ErrorCode()
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		p.code = codeTimeout
	case errors.As(err, &he):
		p.code = echoCode(he.Code)
		if p.code == codeInvalidRequest {
			p.message = "invalid request" // the table's message is the Tenant Service's
		}
	default:
		p.code = codeInternal
	}
	status, message, ok := errorTable(p.code)
	if !ok {
		// A code this build does not know (a newer upstream package?) is
		// a bug to fix, not something to guess a status for.
		p.code = codeInternal
		status, message, _ = errorTable(codeInternal)
	}
	var limited *cache.RefreshLimitedError
	if errors.As(err, &limited) {
		// A forced refresh inside -min-refresh-interval gets the error of
		// that interval's forced exchange as a 503 (contract, "Forced
		// refresh"), whatever its code: the caller may try again once the
		// interval is over, and Retry-After says when.
		status = http.StatusServiceUnavailable
	}
	p.status = status
	if p.message == "" {
		p.message = message
		if ae != nil && ae.tenant != "" {
			p.message += " (tenant " + ae.tenant
			if ae.provider != "" {
				p.message += ", provider " + ae.provider
			}
			p.message += ")"
		}
		// An error may carry a detail meant for the caller (which kid did
		// not open a credential, and why); its type vouches that it holds
		// no secret.
		var detailed interface{ PublicDetail() string }
		if errors.As(err, &detailed) {
			p.message += ": " + detailed.PublicDetail()
		}
	}
	if status == http.StatusServiceUnavailable {
		var hint time.Duration
		var ra interface{ RetryAfter() time.Duration }
		if errors.As(err, &ra) {
			hint = ra.RetryAfter()
		}
		p.retryAfter = retryAfterSeconds(hint)
	}
	return p
}

// echoCode maps echo's own errors (the router's 404 and 405) to codes.
func echoCode(status int) string {
	switch {
	case status == http.StatusNotFound:
		return codeNotFound
	case status == http.StatusMethodNotAllowed:
		return codeMethodNotAllowed
	case status >= 400 && status < 500:
		return codeInvalidRequest
	}
	return codeInternal
}

// errorBody is the JSON error body of every error answer.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeProblem writes an error answer: JSON body, no-store, and Retry-After on
// a 503. Write errors are ignored: the caller has gone.
func writeProblem(c echo.Context, p problem) {
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set("Pragma", "no-cache")
	if p.retryAfter > 0 {
		h.Set(echo.HeaderRetryAfter, strconv.Itoa(p.retryAfter))
	}
	body, _ := json.Marshal(errorBody{Code: p.code, Message: p.message}) // cannot fail: two strings
	c.Response().WriteHeader(p.status)
	_, _ = c.Response().Write(append(body, '\n'))
}

// handleError is the echo HTTPErrorHandler of both listeners. Unlike echo's
// default it looks through wrapped errors (errors.As) and always answers with
// the JSON error body. Once the response is committed nothing more can be
// said, so it writes nothing.
func handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	writeProblem(c, classify(err))
}
