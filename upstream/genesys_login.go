package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/token-sidecar/token-sidecar/regions"
)

const (
	defaultLoginTimeout = 10 * time.Second
	// MaxTokenLifetime is the longest lifetime Genesys grants an OAuth client
	// (48 h). A longer expires_in is clamped to it: the answer is odd, and
	// trusting it would keep a token cached past any lifetime Genesys allows.
	MaxTokenLifetime = 48 * time.Hour
)

// LoginClientConfig configures a LoginClient. Every zero value means the
// documented default.
type LoginClientConfig struct {
	// BaseURL replaces the region's login base (https://login.{domain}) for
	// every region (-genesys-login-url: egress proxies, tests, -demo); "" uses
	// the region's. The token endpoint is BaseURL + "/oauth/token".
	BaseURL string
	// RateLimitBackoffMin and RateLimitBackoffMax bound the backoff after a
	// 429 or Genesys's rate-limit 400 that came without Retry-After; 0 means
	// 1 s and 8 s.
	RateLimitBackoffMin, RateLimitBackoffMax time.Duration
	// CallConfig holds the settings both clients share. For the login a zero
	// Timeout means 10 s. There is one circuit breaker per login host: each
	// region's host has its own, so that one region's outage never blocks
	// another (with BaseURL set, every region shares that one host and its
	// breaker); an open one fails calls at once with OAUTH_EXCHANGE_FAILED.
	// Spans are named "genesys_login.exchange".
	CallConfig
}

// LoginClient performs the OAuth client-credentials exchange with Genesys
// Cloud: POST {login base}/oauth/token with HTTP Basic client
// authentication.
//
// It retries 5xx, 408, 429, timeouts, network errors and Genesys's
// rate-limit answer (400 invalid_request whose description starts "rate
// limit exceeded"). It never retries 401 or other 400s. Each login host has
// a circuit breaker of its own; while it is open, calls to that host fail at
// once.
//
// A LoginClient is safe for concurrent use.
type LoginClient struct {
	base *url.URL // nil: the region's login base
	call *caller
}

// NewLoginClient checks cfg and builds a client.
func NewLoginClient(cfg LoginClientConfig) (*LoginClient, error) {
	var base *url.URL
	if cfg.BaseURL != "" {
		b, err := parseBaseURL("Genesys login BaseURL", cfg.BaseURL)
		if err != nil {
			return nil, fmt.Errorf("upstream: %w", err)
		}
		base = b
	}
	call, err := newCaller(cfg.CallConfig, callerSpec{
		upstream:       GenesysLogin,
		spanName:       "genesys_login.exchange",
		exhausted:      CodeOAuthExchangeFailed,
		classify:       classifyLogin,
		defaultTimeout: defaultLoginTimeout,
		urlTemplate:    "/oauth/token",
		rateLimitMin:   cfg.RateLimitBackoffMin,
		rateLimitMax:   cfg.RateLimitBackoffMax,
	})
	if err != nil {
		return nil, err
	}
	return &LoginClient{base: base, call: call}, nil
}

// Token is the answer of a successful exchange. Formatting or logging it
// redacts the access token.
type Token struct {
	// AccessToken is the bearer token. Never log it.
	AccessToken string
	// TokenType is Genesys's token_type, "bearer" when it sent none.
	TokenType string
	// ExpiresIn is the lifetime Genesys granted, counted from its answer;
	// always positive and at most MaxTokenLifetime.
	ExpiresIn time.Duration
}

// String redacts the token.
func (t Token) String() string {
	return "upstream.Token{AccessToken:[redacted] TokenType:" + t.TokenType + " ExpiresIn:" + t.ExpiresIn.String() + "}"
}

// GoString redacts too.
func (t Token) GoString() string { return t.String() }

// LogValue redacts the token in slog output.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("token_type", t.TokenType), slog.Duration("expires_in", t.ExpiresIn))
}

// Exchange trades creds for an access token at region's login host (or the
// configured BaseURL). It does not wipe creds — the caller owns them — but
// zeroes every copy of the secret it makes, except the Authorization header
// string, which Go cannot overwrite.
//
// Errors are *Error: OAUTH_INVALID_GRANT (401, or a 4xx naming an OAuth
// error such as invalid_client, unauthorized_client or invalid_grant),
// OAUTH_EXCHANGE_FAILED (retries spent, a 4xx without an OAuth error, the
// login host's circuit breaker open — then errors.Is finds ErrCircuitOpen —
// or ctx ended — then errors.Is finds the context error), UPSTREAM_INVALID_RESPONSE
// (200 without access_token, expires_in ≤ 0, non-JSON, over MaxBodyBytes,
// 3xx) and INVALID_REQUEST (incomplete creds or a zero Region).
func (c *LoginClient) Exchange(ctx context.Context, region regions.Region, creds *Credentials) (_ Token, err error) {
	tenant := ""
	if creds != nil {
		tenant = creds.Tenant
	}
	ctx, span := c.call.tel.begin(ctx, tenant, spanAttrRegion.String(region.Name))
	defer func() { span.end(err) }()
	if creds == nil || creds.ClientID == "" || len(creds.ClientSecret) == 0 {
		return Token{}, &Error{Code: CodeInvalidRequest, Upstream: GenesysLogin, Err: errors.New("credentials lack a client ID or secret")}
	}
	base := c.base
	if base == nil {
		if region.Domain == "" {
			return Token{}, &Error{Code: CodeInvalidRequest, Upstream: GenesysLogin, Err: errors.New("no region given")}
		}
		b, err := parseBaseURL("region login base", region.LoginBaseURL())
		if err != nil {
			return Token{}, &Error{Code: CodeInvalidRequest, Upstream: GenesysLogin, Err: err}
		}
		base = b
	}
	u := joinPath(base, "oauth", "token").String()
	authorization := basicAuthorization(creds.ClientID, creds.ClientSecret)
	build := func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader("grant_type=client_credentials"))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", authorization)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		return req, nil
	}
	o, err := c.call.call(ctx, creds.Tenant, hostKey(base), build)
	if err != nil {
		return Token{}, err
	}
	defer o.wipe()

	tok, why := parseToken(o.body)
	if why != "" {
		return Token{}, c.call.invalid(o, errors.New(why))
	}
	c.call.log.LogAttrs(ctx, slog.LevelDebug, "access token issued",
		slog.String("upstream", GenesysLogin), slog.String("tenant", creds.Tenant),
		slog.String("region", region.Name), slog.Int("attempts", o.attempt),
		slog.Duration("expires_in", tok.ExpiresIn))
	return tok, nil
}

// parseToken validates a 200 body; why is "" when it is usable.
func parseToken(b []byte) (tok Token, why string) {
	var body struct {
		AccessToken string          `json:"access_token"`
		TokenType   string          `json:"token_type"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return Token{}, "token answer is not a JSON object with string access_token and token_type"
	}
	if body.AccessToken == "" {
		return Token{}, "token answer lacks access_token"
	}
	secs, ok := parseSeconds(body.ExpiresIn)
	if !ok {
		return Token{}, "token answer lacks a numeric expires_in"
	}
	if secs <= 0 {
		return Token{}, "token answer has a non-positive expires_in"
	}
	life := MaxTokenLifetime
	if secs < MaxTokenLifetime.Seconds() {
		life = time.Duration(secs * float64(time.Second))
	}
	typ := body.TokenType
	if typ == "" {
		typ = "bearer"
	}
	return Token{AccessToken: body.AccessToken, TokenType: typ, ExpiresIn: life}, ""
}

// parseSeconds reads a JSON number, or a number in a JSON string (some
// OAuth servers send "3600").
func parseSeconds(raw json.RawMessage) (float64, bool) {
	s := string(bytes.TrimSpace(raw))
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// isOAuthErrorWord reports whether s is in RFC 6749's error vocabulary
// (§5.2, plus the two §4.1.2.1 words servers also send). Only these words
// are copied into Error.OAuthError, so that an odd server cannot get
// arbitrary text into logs.
func isOAuthErrorWord(s string) bool {
	switch s {
	case "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
		"unsupported_grant_type", "invalid_scope", "access_denied",
		"server_error", "temporarily_unavailable":
		return true
	}
	return false
}

// classifyLogin decides one Genesys login attempt.
//
// A non-retryable 4xx is OAUTH_INVALID_GRANT when it is a 401 or its body
// names an OAuth error — Genesys refuses this client or request, and asking
// again will not change that, so the cache may hold the error briefly — and
// OAUTH_EXCHANGE_FAILED when it names none (a gateway's answer rather than
// Genesys's verdict on the client).
//
// It sets o.oauthError to the OAuth error word a 4xx answer names.
func classifyLogin(c *caller, o *outcome) result {
	if r, done := c.common(o); done {
		return r
	}
	s := o.status
	reason := "HTTP " + strconv.Itoa(s)
	switch {
	case s == http.StatusOK:
		return result{}
	case s >= 400 && s < 500:
		oe := parseOAuthError(o)
		if isOAuthErrorWord(oe.Error) {
			o.oauthError = oe.Error
			reason += " " + oe.Error
		}
		if s == http.StatusBadRequest && oe.Error == "invalid_request" && oe.isRateLimit() {
			// Not the host's fault, so rateLimited: the rate-limit backoff.
			return result{retry: true, reason: "rate limit exceeded", retryAfter: retryAfter(o.header, c.now())}
		}
		if s == http.StatusUnauthorized || (s == http.StatusBadRequest && rejectsClient(oe.Error)) {
			return result{code: CodeOAuthInvalidGrant, reason: reason}
		}
		return result{code: CodeOAuthExchangeFailed, reason: reason}
	default:
		return result{code: CodeUpstreamInvalidResponse, reason: reason}
	}
}

// rejectsClient reports the OAuth errors with which Genesys refuses the
// client itself (contract: 502 OAUTH_INVALID_GRANT, cached briefly). Any
// other 4xx, such as a misrouted login URL's 404, is an exchange failure:
// calling it a bad client would send operators after the wrong problem.
func rejectsClient(oauthError string) bool {
	switch oauthError {
	case "invalid_client", "unauthorized_client", "invalid_grant":
		return true
	}
	return false
}

// oauthErrorBody is a Genesys error answer. Genesys sends both description
// and error_description, with the same text.
type oauthErrorBody struct {
	Error            string `json:"error"`
	Description      string `json:"description"`
	ErrorDescription string `json:"error_description"`
}

func (b oauthErrorBody) isRateLimit() bool {
	const prefix = "rate limit exceeded"
	for _, d := range []string{b.Description, b.ErrorDescription} {
		d = strings.TrimSpace(d)
		if len(d) >= len(prefix) && strings.EqualFold(d[:len(prefix)], prefix) {
			return true
		}
	}
	return false
}

// parseOAuthError reads an error body whatever its Content-Type says (some
// gateways label JSON text/plain); a non-JSON body gives the zero value, and
// so OAUTH_EXCHANGE_FAILED for a non-401.
func parseOAuthError(o *outcome) oauthErrorBody {
	var b oauthErrorBody
	if json.Unmarshal(o.body, &b) != nil {
		return oauthErrorBody{}
	}
	return b
}
