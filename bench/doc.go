// Package bench holds the sidecar's performance measurements: Go benchmarks
// of the cache and the HTTP handlers, in process (cache_bench_test.go), and
// the load tool that drives the built binary over loopback (loadtest/).
// README.md in this directory records their figures and how they were taken.
//
// Nothing in the module imports this package; it may import any of them.
package bench
