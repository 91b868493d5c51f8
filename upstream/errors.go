// Package upstream owns every outbound call of the sidecar: the Tenant Service
// client, the Genesys Cloud login client, the fetch-then-exchange pipeline that
// joins them, their failsafe-go retry policies, the typed errors they return,
// the opening of credentials the Tenant Service sends encrypted (JWE, see
// CredentialDecryption) and the wiping of client secrets after use.
//
// Retries run only here, through a failsafe-go retry policy per call. Each
// attempt has its own deadline and reads its whole answer (at most
// MaxBodyBytes) and closes it before the policy looks at it, so no retried
// body is ever left open. Transient failures (5xx, 408, 429, timeouts,
// network errors, and Genesys's rate-limit 400) are retried with exponential
// backoff and jitter, or after exactly the server's Retry-After (seconds or
// HTTP-date, never earlier, at most MaxRetryAfter); everything else ends the
// call at once. Every failure is an *Error carrying a contract code, the last
// HTTP status, the attempt count and a retry hint. When the caller's context
// ends, the *Error wraps ctx.Err().
//
// Inside the retry policy, every attempt passes a failsafe-go circuit breaker
// of its host (see BreakerConfig): the Tenant Service, and each Genesys
// region's login host on its own. Sustained 5xx, timeouts and network errors
// open it — never a 4xx, a 429 or the caller giving up — and an open breaker
// ends a call at once, without an attempt or a retry, with the upstream's
// "unavailable" code, ErrCircuitOpen and the time left open as retry hint,
// until it half-opens and probes the host. State changes are logged and
// measured (token_sidecar.upstream.circuit.*).
//
// No client ID, client secret, Authorization value or access token is ever
// logged or put in an error text; upstream bodies never are either, nor the
// transport's error texts, which quote the bytes of a malformed answer:
// they are replaced by fixed reasons (RedactingTransport). A region that is
// none is named by its length and fingerprint, never echoed.
//
// Telemetry comes from the providers in the client configs, never from
// OpenTelemetry's globals: a span per call ("tenant_service.fetch",
// "genesys_login.exchange") with an HTTP client span per attempt (otelhttp,
// which records no header) and an event per retry, the W3C trace context on
// every request, and the token_sidecar.upstream.* metrics.
//
// Files: caller.go one upstream's calls (HTTP client, attempts, retry policy,
// breakers, telemetry, the call's error); result.go what an attempt means and
// the rules both upstreams share; retry.go backoff and Retry-After;
// breaker.go the per-host breakers; tenant_client.go and genesys_login.go
// the two upstreams, each with its classifier; pipeline.go the
// fetch-then-exchange; transport.go and transport_errors.go the HTTP stack
// and its redaction; jwe.go and credential_key*.go encrypted credentials.
//
// It imports regions and nothing else of this module; it must never import
// cache, proxy or cmd.
package upstream

import (
	"fmt"
	"time"
)

// Code is one of the contract's error codes. The proxy maps codes to HTTP
// statuses; upstream only decides which code a failure is.
type Code string

// The error codes of shared/docs/contract.md that an upstream failure can have.
const (
	CodeCredentialsNotFound      Code = "CREDENTIALS_NOT_FOUND"
	CodeInvalidRequest           Code = "INVALID_REQUEST"
	CodeTenantServiceUnavailable Code = "TENANT_SERVICE_UNAVAILABLE"
	CodeOAuthInvalidGrant        Code = "OAUTH_INVALID_GRANT"
	CodeOAuthExchangeFailed      Code = "OAUTH_EXCHANGE_FAILED"
	CodeUpstreamInvalidResponse  Code = "UPSTREAM_INVALID_RESPONSE"
)

// Names of the two upstreams, used in errors, logs, span and metric attributes.
const (
	TenantService = "tenant_service"
	GenesysLogin  = "genesys_login"
)

// Error is the one error type the upstream clients return. Its message is safe
// to log and to show to a caller: it never holds a credential, a token or an
// upstream response body.
type Error struct {
	// Code is the contract error code.
	Code Code
	// Upstream is TenantService or GenesysLogin; "" when the call was refused
	// before reaching either (an unknown provider).
	Upstream string
	// Status is the HTTP status of the last upstream answer, 0 when there was
	// none (timeout, network error).
	Status int
	// Attempts is how many requests were made before giving up.
	Attempts int
	// RetryAfterHint is how long the caller should wait before trying again,
	// when the upstream said so (Retry-After) or the failure is transient;
	// zero when it is unknown.
	RetryAfterHint time.Duration
	// OAuthError is the OAuth "error" field of a Genesys 4xx answer, such as
	// "invalid_client". It is a fixed vocabulary word, never a credential.
	OAuthError string
	// Err is the underlying cause, if any; it is unwrapped by errors.Is/As.
	// Its text must be free of secrets too (URLs carry no credentials here).
	Err error
}

func (e *Error) Error() string {
	msg := string(e.Code)
	if e.Upstream != "" {
		msg = e.Upstream + ": " + msg
	}
	if e.Status != 0 {
		msg += fmt.Sprintf(" (HTTP %d", e.Status)
		if e.OAuthError != "" {
			msg += " " + e.OAuthError
		}
		msg += ")"
	}
	if e.Attempts > 1 {
		msg += fmt.Sprintf(" after %d attempts", e.Attempts)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorCode returns the contract code as a string. The proxy reads it through
// a one-method interface, so that it does not have to import this package.
func (e *Error) ErrorCode() string { return string(e.Code) }

// RetryAfter returns RetryAfterHint; the proxy uses it for the Retry-After
// header of a 503.
func (e *Error) RetryAfter() time.Duration { return e.RetryAfterHint }
