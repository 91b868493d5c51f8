package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/token-sidecar/token-sidecar/cache"
	"github.com/token-sidecar/token-sidecar/proxy"
)

// memoryTenants is the tenant count of issue 6's memory target: at most
// 2 KiB per cached tenant with 20,000 of them.
const memoryTenants = 20000

// fakeToken is a token shaped like one the upstream pipeline hands the
// cache: every string is its own allocation, as it is when decoded from a
// login answer, and the access token is as long as the fake login's (43
// characters; real Genesys tokens are of the same order).
func fakeToken(now time.Time) cache.Token {
	b := make([]byte, 32)
	rand.Read(b)
	return cache.Token{
		AccessToken: base64.RawURLEncoding.EncodeToString(b),
		TokenType:   strings.Clone("bearer"),
		ExpiresAt:   now.Add(86399 * time.Second),
		Lifetime:    86399 * time.Second,
		APIBaseURL:  strings.Clone("https://api.mypurecloud.ie"),
	}
}

// newCache returns a cache whose Source makes a fresh token per fetch.
func newCache(tb testing.TB, capacity int) *cache.Cache {
	tb.Helper()
	c, err := cache.New(cache.Config{
		Capacity: capacity,
		Source: cache.SourceFunc(func(context.Context, cache.FetchRequest) (cache.Token, error) {
			return fakeToken(time.Now()), nil
		}),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

func tenantKey(i int) cache.Key {
	return cache.Key{Provider: "genesys", Tenant: fmt.Sprintf("tenant-%06d", i)}
}

// BenchmarkCacheHit is cache.Get of a warm key: the cached-token path
// without HTTP.
func BenchmarkCacheHit(b *testing.B) {
	c := newCache(b, 0)
	ctx := context.Background()
	key := tenantKey(0)
	if _, err := c.Get(ctx, key); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Get(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheHitParallel is BenchmarkCacheHit from GOMAXPROCS goroutines,
// on one hot key and on keys spread over 1,000 tenants: every Get takes the
// ttlcache's one mutex (an LRU move), so this shows its contention.
func BenchmarkCacheHitParallel(b *testing.B) {
	for _, tenants := range []int{1, 1000} {
		b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) {
			c := newCache(b, 0)
			ctx := context.Background()
			keys := make([]cache.Key, tenants)
			for i := range keys {
				keys[i] = tenantKey(i)
				if _, err := c.Get(ctx, keys[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := c.Get(ctx, keys[i%tenants]); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}
}

// heapAfterGC is the live heap once two GC cycles have swept everything
// unreachable.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkCacheMemoryPerEntry fills a cache with 20,000 tenants and reports
// the live heap they cost, per entry (B/entry): the entry, the ttlcache item,
// its LRU element and expiry-queue slot, the map slot, the key's tenant
// string and the token's strings. Issue 6's target is ≤ 2048 B/entry for
// the whole process; the load tool's memory scenario measures that.
func BenchmarkCacheMemoryPerEntry(b *testing.B) {
	ctx := context.Background()
	keys := make([]cache.Key, memoryTenants)
	for i := range keys {
		keys[i] = tenantKey(i)
	}
	var total float64
	for i := 0; i < b.N; i++ {
		c := newCache(b, memoryTenants+10000)
		before := heapAfterGC()
		for _, k := range keys {
			// The key's tenant string is the request's own copy in the
			// sidecar; clone it so the cache keeps one of its own too.
			k.Tenant = strings.Clone(k.Tenant)
			if _, err := c.Get(ctx, k); err != nil {
				b.Fatal(err)
			}
		}
		after := heapAfterGC()
		if c.Len() != memoryTenants {
			b.Fatalf("cache holds %d entries, want %d", c.Len(), memoryTenants)
		}
		total += (float64(after) - float64(before)) / memoryTenants
		runtime.KeepAlive(c)
		c.Close()
	}
	b.ReportMetric(total/float64(b.N), "B/entry")
}

// discardWriter is a ResponseWriter that keeps only the status, so that the
// handler benchmarks measure the handler and not a recorder's buffer.
type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }

// serveLoop serves req to h b.N times and checks each answer is 200.
func serveLoop(b *testing.B, h http.Handler, req *http.Request) {
	w := &discardWriter{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.header)
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// telemetry mirrors cmd/token-sidecar's setup when no OTEL_* variable is
// set: an SDK meter provider (read by the Prometheus exporter there, by a
// manual reader here), a tracer provider that never samples (every request
// still gets a trace ID for its logs), and otelhttp around each listener,
// which skips the probes and /metrics.
type telemetry struct {
	mp *sdkmetric.MeterProvider
	tp *sdktrace.TracerProvider
}

func newTelemetry(b *testing.B) telemetry {
	t := telemetry{
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())),
		tp: sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample())),
	}
	b.Cleanup(func() {
		_ = t.mp.Shutdown(context.Background())
		_ = t.tp.Shutdown(context.Background())
	})
	return t
}

func (t telemetry) wrap(h http.Handler, operation string) http.Handler {
	return otelhttp.NewHandler(h, operation,
		otelhttp.WithTracerProvider(t.tp),
		otelhttp.WithMeterProvider(t.mp),
		otelhttp.WithPropagators(propagation.TraceContext{}),
		otelhttp.WithFilter(func(r *http.Request) bool {
			switch r.URL.Path {
			case "/healthz", "/readyz", "/metrics":
				return false
			}
			return true
		}),
	)
}

// BenchmarkHandlerTokenHit is GET /token for a cached tenant through the
// token listener's whole handler (echo, request log, request-header check,
// tenant rules, cache, JSON body), without the network: plain, with the
// cache's and the proxy's metrics on an SDK meter provider, and with
// otelhttp around it too, as cmd/token-sidecar wires it. BenchmarkHandlerHealthz
// is the admin /healthz next to it, with otelhttp's filter skipping it as in
// cmd: their ratio is issue 3's in-process counterpart.
func BenchmarkHandlerTokenHit(b *testing.B) {
	for _, mode := range []string{"plain", "metrics", "metrics+otelhttp"} {
		b.Run(mode, func(b *testing.B) {
			var mp metric.MeterProvider
			tel := newTelemetry(b)
			if mode != "plain" {
				mp = tel.mp
			}
			c, err := cache.New(cache.Config{
				Source: cache.SourceFunc(func(context.Context, cache.FetchRequest) (cache.Token, error) {
					return fakeToken(time.Now()), nil
				}),
				MeterProvider: mp,
			})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(c.Close)
			cfg := proxy.Config{Cache: c, RequireRequestHeader: true, MeterProvider: mp}
			if mode != "plain" {
				// As cmd passes it: spans on demand, none for a cached token.
				cfg.TracerProvider = tel.tp
			}
			h, err := proxy.NewTokenHandler(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if mode == "metrics+otelhttp" {
				h = tel.wrap(h, "token")
			}
			req := httptest.NewRequest(http.MethodGet, "/token?tenant=tenant-000001", nil)
			req.Header.Set("X-Token-Request", "true")
			if _, err := c.Get(req.Context(), tenantKey(1)); err != nil {
				b.Fatal(err)
			}
			serveLoop(b, h, req)
		})
	}
}

// BenchmarkHandlerHealthz is GET /healthz through the admin handler, wrapped
// as cmd wraps it (otelhttp's filter lets it through untouched).
func BenchmarkHandlerHealthz(b *testing.B) {
	tel := newTelemetry(b)
	h := tel.wrap(proxy.NewAdminHandler(proxy.AdminConfig{}), "admin")
	serveLoop(b, h, httptest.NewRequest(http.MethodGet, "/healthz", nil))
}
