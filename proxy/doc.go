// Package proxy owns the sidecar's inbound HTTP: the echo v4 instances of the
// token listener (GET /token, POST /token/refresh, the Genesys API reverse
// proxy under /proxy/) and of the admin listener
// (/healthz, /readyz, /metrics), their routes, their middleware (request log,
// panic recovery, the X-Token-Request check), tenant resolution, validation
// and allow-listing, and the one table that maps error codes to HTTP
// statuses and JSON error bodies.
//
// All echo-specific code stays inside this package, so that a move to echo v5
// touches nothing else. The package depends on cache for the token types and
// reaches the cache through the small TokenCache interface. It must never
// import upstream or cmd: upstream errors are read through one-method
// interfaces (ErrorCode, RetryAfter) with errors.As.
//
// The handlers built here are safe for concurrent use. They do not listen or
// serve by themselves: cmd builds the http.Server around them, with its own
// timeouts, listener and graceful shutdown.
package proxy
