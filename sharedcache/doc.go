// Package sharedcache lets the sidecars of a fleet share their tokens through
// one Redis (or Valkey) server. It is a cache.Source decorator: it wraps the
// Source that fetches from the upstreams and is passed to the pod's cache as
// its Source, so the pod's own cache and its hit path are unchanged (a hit
// never touches the network). Only the cache's fetches — a miss, a refresh
// ahead of expiry, a forced refresh — ask the shared cache first.
//
// What it stores is sealed with AES-256-GCM under keys the server never sees,
// with the provider and tenant as associated data, and named by an HMAC of
// them: the server holds no token, tenant ID, client ID or secret in clear.
// Client secrets are never stored at all.
//
// The shared cache is never a single point of failure: every Redis command
// has a short timeout, a circuit breaker stops the sidecar waiting on a dead
// server, and any failure — down, slow, refused credentials, out of memory,
// garbage — makes Fetch call the wrapped Source directly, as if there were no
// shared cache.
//
// It imports cache for its types and must not import proxy, upstream or cmd.
// Its metrics and spans go to the providers in Config, never to
// OpenTelemetry's globals.
package sharedcache
