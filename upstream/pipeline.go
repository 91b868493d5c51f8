package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/token-sidecar/token-sidecar/regions"
)

const defaultStaticTokenTTL = 5 * time.Minute

// Pipeline issues a provider's token for a tenant from the upstreams: for
// Genesys, fetch the credentials, resolve the region, exchange, and wipe the
// secret whatever happened; for a static-token provider (WhatsApp), fetch
// the token.
//
// Set the fields before the first call and do not change them afterwards;
// Issue is then safe for concurrent use. Pipeline does no caching and no
// request collapsing: that is the cache's job.
type Pipeline struct {
	// Tenants fetches credentials and static tokens. Required.
	Tenants *TenantClient
	// Login exchanges Genesys credentials. Required for provider "genesys".
	Login *LoginClient
	// Now is the clock for ExpiresAt; nil means time.Now.
	Now func() time.Time
	// APIBaseURL replaces the region's API base in Issued for every region
	// (-genesys-api-url); "" uses region.APIBaseURL().
	APIBaseURL string
	// StaticTokenTTL bounds how long a static token is issued for, so that a
	// rotated token is picked up; 0 means 5 minutes.
	StaticTokenTTL time.Duration

	// inspect, when set (tests only), sees the fetched credentials before
	// the exchange, to check afterwards that their secret was zeroed.
	inspect func(*Credentials)
}

// Issued is a token as the pipeline hands it to the cache. Formatting or
// logging it redacts the access token.
type Issued struct {
	// AccessToken is the bearer token. Never log it.
	AccessToken string
	// TokenType is "bearer" unless Genesys said otherwise.
	TokenType string
	// ExpiresAt is when the token stops working: the start of the exchange
	// plus its lifetime, so it errs early, never late.
	ExpiresAt time.Time
	// Lifetime is the whole lifetime granted (expires_in, or the static
	// token's TTL bound).
	Lifetime time.Duration
	// APIBaseURL is the Platform API base the token is for, e.g.
	// "https://api.mypurecloud.ie"; "" for providers without one.
	APIBaseURL string
	// Region is the canonical region name ("eu-west-1"); "" for providers
	// without one.
	Region string
}

// String redacts the token.
func (i Issued) String() string {
	return fmt.Sprintf("upstream.Issued{AccessToken:[redacted] TokenType:%s ExpiresAt:%s Lifetime:%s APIBaseURL:%s Region:%s}",
		i.TokenType, i.ExpiresAt.Format(time.RFC3339), i.Lifetime, i.APIBaseURL, i.Region)
}

// GoString redacts too.
func (i Issued) GoString() string { return i.String() }

// LogValue redacts the token in slog output.
func (i Issued) LogValue() slog.Value {
	return slog.GroupValue(slog.String("token_type", i.TokenType), slog.Time("expires_at", i.ExpiresAt),
		slog.Duration("lifetime", i.Lifetime), slog.String("region", i.Region))
}

// Providers lists the provider names Issue accepts.
func Providers() []string { return []string{ProviderGenesys, ProviderWhatsApp} }

// issuer returns how a provider's token is issued, nil for an unknown
// provider. Adding a provider is a case here and a method below.
func (p *Pipeline) issuer(provider string) func(context.Context, string) (Issued, error) {
	switch provider {
	case ProviderGenesys:
		return p.issueGenesys
	case ProviderWhatsApp:
		return func(ctx context.Context, tenant string) (Issued, error) {
			return p.issueStatic(ctx, ProviderWhatsApp, tenant)
		}
	}
	return nil
}

// Issue gets a fresh token of provider for tenant; it never caches. An
// unknown provider is an *Error with CodeInvalidRequest and no upstream
// call; every upstream failure is an *Error as its client documents.
func (p *Pipeline) Issue(ctx context.Context, provider, tenant string) (Issued, error) {
	issue := p.issuer(provider)
	if issue == nil {
		return Issued{}, &Error{Code: CodeInvalidRequest, Err: fmt.Errorf("unknown provider %.64q", provider)}
	}
	if p.Tenants == nil {
		return Issued{}, errors.New("upstream: Pipeline has no Tenant Service client")
	}
	return issue(ctx, tenant)
}

func (p *Pipeline) issueGenesys(ctx context.Context, tenant string) (Issued, error) {
	if p.Login == nil {
		return Issued{}, errors.New("upstream: Pipeline has no Genesys login client")
	}
	creds, err := p.Tenants.GenesysCredentials(ctx, tenant)
	if err != nil {
		return Issued{}, err
	}
	defer creds.Wipe()
	if p.inspect != nil {
		p.inspect(creds)
	}

	region, err := regions.Lookup(creds.Region)
	if err != nil {
		// The region came from the Tenant Service, so the answer is what is
		// wrong. The message lists the valid regions, nothing secret.
		return Issued{}, &Error{Code: CodeUpstreamInvalidResponse, Upstream: TenantService, Status: 200, Err: err}
	}
	start := p.now()
	tok, err := p.Login.Exchange(ctx, region, creds)
	if err != nil {
		return Issued{}, err
	}
	api := region.APIBaseURL()
	if p.APIBaseURL != "" {
		api = p.APIBaseURL
	}
	return Issued{
		AccessToken: tok.AccessToken,
		TokenType:   tok.TokenType,
		ExpiresAt:   start.Add(tok.ExpiresIn),
		Lifetime:    tok.ExpiresIn,
		APIBaseURL:  api,
		Region:      region.Name,
	}, nil
}

// issueStatic serves the Tenant Service's token as it is, for at most
// StaticTokenTTL and never past its own expiresAt.
func (p *Pipeline) issueStatic(ctx context.Context, provider, tenant string) (Issued, error) {
	st, err := p.Tenants.StaticToken(ctx, tenant, provider)
	if err != nil {
		return Issued{}, err
	}
	now := p.now()
	life := p.StaticTokenTTL
	if life <= 0 {
		life = defaultStaticTokenTTL
	}
	if !st.ExpiresAt.IsZero() {
		life = min(life, st.ExpiresAt.Sub(now))
	}
	if life <= 0 {
		return Issued{}, &Error{Code: CodeUpstreamInvalidResponse, Upstream: TenantService, Status: 200,
			Err: errors.New("static token has already expired")}
	}
	return Issued{AccessToken: st.AccessToken, TokenType: "bearer", ExpiresAt: now.Add(life), Lifetime: life}, nil
}

func (p *Pipeline) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}
