package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/token-sidecar/token-sidecar/regions"
)

// Provider names as the Tenant Service and the token API spell them.
const (
	ProviderGenesys  = "genesys"
	ProviderWhatsApp = "whatsapp"
)

const (
	defaultServiceName   = "auth-service"
	defaultTenantTimeout = 5 * time.Second
)

// TenantClientConfig configures a TenantClient. Every zero value means the
// documented default.
type TenantClientConfig struct {
	// BaseURL is the Tenant Service base, e.g. "http://tenant-service:8080"
	// (SIDECAR_TENANT_SERVICE_URL). Required: an absolute http or https URL
	// without user info, query or fragment. A path prefix is kept.
	BaseURL string
	// ServiceName is sent as X-Service-Name; "" means "auth-service".
	ServiceName string
	// Decryption opens clientSecret and accessToken values delivered as a
	// JWE; the zero value holds no key and takes plain values as they are.
	Decryption CredentialDecryption
	// CallConfig holds the settings both clients share. For the Tenant
	// Service a zero Timeout means 5 s; the circuit breaker guards the Tenant
	// Service host, and an open one fails calls at once with
	// TENANT_SERVICE_UNAVAILABLE. Spans are named "tenant_service.fetch".
	CallConfig
}

// TenantClient fetches a tenant's credentials from the Tenant Service:
// GET {base}/tenants/{tenant}/credentials/{provider}. It retries 5xx, 408,
// 429, timeouts and network errors, never any other 4xx, and stops calling
// while the Tenant Service host's circuit breaker is open.
//
// A TenantClient is safe for concurrent use; it holds no per-call state.
type TenantClient struct {
	base        *url.URL
	host        string // hostKey(base): the breaker's key
	serviceName string
	call        *caller
	open        *credentialOpener
}

// NewTenantClient checks cfg and builds a client.
func NewTenantClient(cfg TenantClientConfig) (*TenantClient, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("upstream: Tenant Service BaseURL is required")
	}
	base, err := parseBaseURL("Tenant Service BaseURL", cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	call, err := newCaller(cfg.CallConfig, callerSpec{
		upstream:       TenantService,
		spanName:       "tenant_service.fetch",
		exhausted:      CodeTenantServiceUnavailable,
		classify:       classifyTenantService,
		defaultTimeout: defaultTenantTimeout,
		urlTemplate:    "/tenants/{tenant}/credentials/{provider}",
		// The contract gives the Tenant Service no separate rate-limit
		// backoff: a 429 without Retry-After backs off like a 503.
		rateLimitMin: orDefault(cfg.BackoffMin, defaultBackoffMin),
		rateLimitMax: orDefault(cfg.BackoffMax, defaultBackoffMax),
	})
	if err != nil {
		return nil, err
	}
	name := cfg.ServiceName
	if name == "" {
		name = defaultServiceName
	}
	open, err := newCredentialOpener(cfg.Decryption, cfg.MeterProvider)
	if err != nil {
		return nil, err
	}
	return &TenantClient{
		base:        base,
		host:        hostKey(base),
		serviceName: name,
		call:        call,
		open:        open,
	}, nil
}

// GenesysCredentials fetches the tenant's Genesys OAuth client. The caller
// owns the result and must call Wipe on it when done.
//
// Errors are *Error: CREDENTIALS_NOT_FOUND (404), INVALID_REQUEST (400, or a
// tenant that cannot form a path segment), TENANT_SERVICE_UNAVAILABLE
// (retries spent, 401/403 and other 4xx, the circuit breaker open — then
// errors.Is finds ErrCircuitOpen — or ctx ended — then errors.Is finds the
// context error) and UPSTREAM_INVALID_RESPONSE (unparseable or
// incomplete 200, over MaxBodyBytes, 3xx, or a clientSecret that cannot be
// opened — then errors.As finds a *CredentialError; see
// CredentialDecryption). A secret that arrived as a JWE is its plaintext,
// in a slice of its own that Wipe zeroes like a plain one.
func (c *TenantClient) GenesysCredentials(ctx context.Context, tenant string) (_ *Credentials, err error) {
	ctx, span := c.call.tel.begin(ctx, tenant, spanAttrProvider.String(ProviderGenesys))
	defer func() { span.end(err) }()
	o, err := c.fetch(ctx, tenant, ProviderGenesys)
	if err != nil {
		return nil, err
	}
	defer o.wipe()

	var body struct {
		ClientID     string      `json:"clientId"`
		ClientSecret secretBytes `json:"clientSecret"`
		Region       string      `json:"region"`
	}
	if err := json.Unmarshal(o.body, &body); err != nil {
		clear(body.ClientSecret)
		// Not json's message: a syntax error quotes a byte of the body,
		// which may be a byte of the secret.
		return nil, c.call.invalid(o, errors.New("credentials answer is not a JSON object with string clientId, clientSecret and region"))
	}
	var missing string
	switch {
	case body.ClientID == "":
		missing = "clientId"
	case len(body.ClientSecret) == 0:
		missing = "clientSecret"
	case body.Region == "":
		missing = "region"
	}
	if missing != "" {
		clear(body.ClientSecret)
		return nil, c.call.invalid(o, errors.New("credentials answer lacks "+missing))
	}
	secret, err := c.open.open(ctx, "clientSecret", body.ClientSecret)
	if err != nil {
		clear(body.ClientSecret)
		return nil, c.call.invalid(o, err)
	}
	c.call.log.LogAttrs(ctx, slog.LevelDebug, "tenant credentials fetched",
		slog.String("upstream", TenantService), slog.String("tenant", tenant),
		slog.String("provider", ProviderGenesys), regionAttr(body.Region), slog.Int("attempts", o.attempt))
	return &Credentials{Tenant: tenant, ClientID: body.ClientID, ClientSecret: secret, Region: body.Region}, nil
}

// StaticToken is a ready-made bearer token the Tenant Service holds for a
// provider without an OAuth exchange (WhatsApp). Formatting or logging it
// redacts the token.
type StaticToken struct {
	// AccessToken is the bearer token. Never log it.
	AccessToken string
	// ExpiresAt is when the token stops working; zero when the Tenant Service
	// did not say.
	ExpiresAt time.Time
}

// String redacts the token.
func (t StaticToken) String() string {
	return "upstream.StaticToken{AccessToken:[redacted] ExpiresAt:" + t.ExpiresAt.Format(time.RFC3339) + "}"
}

// GoString redacts too.
func (t StaticToken) GoString() string { return t.String() }

// LogValue redacts the token in slog output.
func (t StaticToken) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expires_at", t.ExpiresAt))
}

// StaticToken fetches the tenant's token for provider, whose answer is
// {"accessToken":"…","expiresAt":"RFC 3339, optional"}. Errors are as for
// GenesysCredentials; an accessToken may arrive as a JWE too. The token is
// a string, as the cache serves it.
func (c *TenantClient) StaticToken(ctx context.Context, tenant, provider string) (_ StaticToken, err error) {
	ctx, span := c.call.tel.begin(ctx, tenant, spanAttrProvider.String(provider))
	defer func() { span.end(err) }()
	o, err := c.fetch(ctx, tenant, provider)
	if err != nil {
		return StaticToken{}, err
	}
	defer o.wipe()

	var body struct {
		AccessToken string  `json:"accessToken"`
		ExpiresAt   *string `json:"expiresAt"`
	}
	if err := json.Unmarshal(o.body, &body); err != nil {
		return StaticToken{}, c.call.invalid(o, errors.New("token answer is not a JSON object with a string accessToken"))
	}
	if body.AccessToken == "" {
		return StaticToken{}, c.call.invalid(o, errors.New("token answer lacks accessToken"))
	}
	var t StaticToken
	token, err := c.open.open(ctx, "accessToken", []byte(body.AccessToken))
	if err != nil {
		return StaticToken{}, c.call.invalid(o, err)
	}
	t.AccessToken = string(token)
	clear(token)
	if body.ExpiresAt != nil && *body.ExpiresAt != "" {
		exp, err := time.Parse(time.RFC3339, *body.ExpiresAt)
		if err != nil {
			return StaticToken{}, c.call.invalid(o, errors.New("token answer has an expiresAt that is not RFC 3339"))
		}
		t.ExpiresAt = exp
	}
	return t, nil
}

// fetch makes the GET with retries and returns the successful outcome, whose
// body the caller must wipe.
func (c *TenantClient) fetch(ctx context.Context, tenant, provider string) (*outcome, error) {
	if err := checkSegment("tenant", tenant); err != nil {
		return nil, &Error{Code: CodeInvalidRequest, Upstream: TenantService, Err: err}
	}
	if err := checkSegment("provider", provider); err != nil {
		return nil, &Error{Code: CodeInvalidRequest, Upstream: TenantService, Err: err}
	}
	u := joinPath(c.base, "tenants", tenant, "credentials", provider).String()
	build := func(ctx context.Context) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("X-Service-Name", c.serviceName)
		req.Header.Set("Accept", "application/json")
		return req, nil
	}
	return c.call.call(ctx, tenant, c.host, build)
}

// checkSegment refuses path segments that escaping cannot make safe: ""
// would change the route, and "." or ".." are removed by any server or proxy
// that normalises paths. The proxy validates tenants far more strictly; this
// is the client's own guard.
func checkSegment(what, s string) error {
	switch s {
	case "", ".", "..":
		return fmt.Errorf("%s %q cannot be a path segment", what, s)
	}
	return nil
}

// classifyTenantService decides one Tenant Service attempt.
//
// 401 and 403 mean the Tenant Service refuses this sidecar (a wrong
// X-Service-Name or network policy): the app's request is fine and waiting
// will not fix it, so they end the call with TENANT_SERVICE_UNAVAILABLE
// without a retry, for operators to see. The same holds for every other
// 4xx except 400, 404, 408 and 429.
func classifyTenantService(c *caller, o *outcome) result {
	if r, done := c.common(o); done {
		return r
	}
	switch s := o.status; {
	case s == http.StatusOK:
		return result{}
	case s == http.StatusNotFound:
		return result{code: CodeCredentialsNotFound, reason: "HTTP 404"}
	case s == http.StatusBadRequest:
		return result{code: CodeInvalidRequest, reason: "HTTP 400"}
	case s >= 400:
		return result{code: CodeTenantServiceUnavailable, reason: "HTTP " + strconv.Itoa(s)}
	default:
		return result{code: CodeUpstreamInvalidResponse, reason: "HTTP " + strconv.Itoa(s)}
	}
}

// regionAttr is a region for a log line: its canonical name when it is one,
// else its length and fingerprint (regions.UnknownRegionError), never the
// value — the Tenant Service may have put anything there.
func regionAttr(region string) slog.Attr {
	r, err := regions.Lookup(region)
	var unknown *regions.UnknownRegionError
	if errors.As(err, &unknown) {
		return slog.Group("region", slog.Int("bytes", unknown.Length), slog.String("sha256", unknown.Fingerprint))
	}
	return slog.String("region", r.Name)
}
