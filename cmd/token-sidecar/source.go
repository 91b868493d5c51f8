package main

import (
	"context"
	"log/slog"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/upstream"
)

// tokenSource adapts the upstream pipeline to cache.Source, so that neither
// package has to import the other.
type tokenSource struct {
	pipeline *upstream.Pipeline
}

// newPipeline builds the Tenant Service and Genesys login clients from cfg,
// reporting to tel; the Tenant Service client opens encrypted credentials
// as dec says.
func newPipeline(cfg config, logger *slog.Logger, tel *telemetry, dec upstream.CredentialDecryption) (tokenSource, error) {
	// What both clients share; each sets its own timeout and retries.
	shared := upstream.CallConfig{
		Breaker:            cfg.breaker(),
		Logger:             logger,
		TracerProvider:     tel.tracerProvider,
		MeterProvider:      tel.meter(),
		Propagator:         tel.propagator,
		MetricsTenantLabel: cfg.MetricsTenantLabel,
	}
	tenantCall := shared
	tenantCall.Timeout = cfg.TenantServiceTimeout
	tenants, err := upstream.NewTenantClient(upstream.TenantClientConfig{
		BaseURL:     cfg.TenantServiceURL,
		ServiceName: cfg.ServiceName,
		Decryption:  dec,
		CallConfig:  tenantCall,
	})
	if err != nil {
		return tokenSource{}, err
	}
	loginCall := shared
	loginCall.Timeout = cfg.OAuthTimeout
	loginCall.MaxRetries = cfg.OAuthMaxRetries
	if loginCall.MaxRetries == 0 {
		loginCall.MaxRetries = -1 // the client reads 0 as "default"; the flag's 0 means none
	}
	login, err := upstream.NewLoginClient(upstream.LoginClientConfig{
		BaseURL:    cfg.GenesysLoginURL,
		CallConfig: loginCall,
	})
	if err != nil {
		return tokenSource{}, err
	}
	return tokenSource{pipeline: &upstream.Pipeline{
		Tenants:        tenants,
		Login:          login,
		APIBaseURL:     cfg.GenesysAPIURL,
		StaticTokenTTL: cfg.StaticTokenTTL,
	}}, nil
}

// Providers lists the providers the pipeline can issue tokens for.
func (s tokenSource) Providers() []string { return upstream.Providers() }

// Fetch implements cache.Source.
func (s tokenSource) Fetch(ctx context.Context, req cache.FetchRequest) (cache.Token, error) {
	iss, err := s.pipeline.Issue(ctx, req.Key.Provider, req.Key.Tenant)
	if err != nil {
		return cache.Token{}, err
	}
	return cache.Token{
		AccessToken: iss.AccessToken,
		TokenType:   iss.TokenType,
		ExpiresAt:   iss.ExpiresAt,
		Lifetime:    iss.Lifetime,
		APIBaseURL:  iss.APIBaseURL,
	}, nil
}
